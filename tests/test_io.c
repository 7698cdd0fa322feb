/* test_io.c — IDX files, datasets and the batcher.
 *
 * IDX files are written by the test itself (plain and gzip) into a temporary folder.
 * The gzip files hold "stored" (uncompressed) deflate blocks, written here so the test
 * needs no zlib of its own; the library's zlib reads them like any gzip file.
 * The Fashion-MNIST test runs when Debian's dataset-fashion-mnist is installed, and is
 * skipped otherwise. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include "anvil.h"
#include "io/io.h"

static char tmpdir[] = "/tmp/anvil_test_io_XXXXXX";

static int setup(void **state)
{
    (void)state;
    return mkdtemp(tmpdir) ? 0 : -1;
}

/* Removes the temporary folder and what is in it (one level of subfolders). */
static void remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char p[1024];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(p, &st) == 0 && S_ISDIR(st.st_mode))
            remove_tree(p);
        else
            unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static int teardown(void **state)
{
    (void)state;
    remove_tree(tmpdir);
    return 0;
}

static const char *tpath(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/%s", tmpdir, name);
    return buf;
}

/* CRC-32 (the gzip trailer's), bit by bit: test files are small. */
static uint32_t crc32_of(const uint8_t *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return ~c;
}

static void put_le32(FILE *f, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        fputc((int)(v >> (8 * i)) & 0xFF, f);
}

/* A gzip file (RFC 1952) whose deflate stream is stored blocks of at most 65535 bytes. */
static void write_gzip(const char *path, const uint8_t *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    static const uint8_t header[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
    fwrite(header, 1, sizeof header, f);
    size_t off = 0;
    do {
        size_t len = n - off < 65535 ? n - off : 65535;
        fputc(off + len == n ? 1 : 0, f); /* BFINAL, BTYPE = stored */
        fputc((int)(len & 0xFF), f);
        fputc((int)(len >> 8), f);
        fputc((int)(~len & 0xFF), f);
        fputc((int)((~len >> 8) & 0xFF), f);
        fwrite(data + off, 1, len, f);
        off += len;
    } while (off < n);
    put_le32(f, crc32_of(data, n));
    put_le32(f, (uint32_t)n);
    assert_int_equal(fclose(f), 0);
}

/* An IDX file: magic 0 0 dtype ndim, big-endian dims, data; `cut` bytes dropped from the
 * end and `extra` zero bytes appended (to make broken files). */
static void write_idx_ex(const char *path, bool gz, int dtype, int ndim, const uint32_t *dims,
                         const uint8_t *data, size_t cut, size_t extra)
{
    size_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= dims[i];
    size_t total = 4 + 4 * (size_t)ndim + n + extra;
    uint8_t *buf = calloc(total, 1);
    assert_non_null(buf);
    buf[2] = (uint8_t)dtype;
    buf[3] = (uint8_t)ndim;
    for (int i = 0; i < ndim; i++) {
        buf[4 + 4 * i] = (uint8_t)(dims[i] >> 24);
        buf[5 + 4 * i] = (uint8_t)(dims[i] >> 16);
        buf[6 + 4 * i] = (uint8_t)(dims[i] >> 8);
        buf[7 + 4 * i] = (uint8_t)dims[i];
    }
    if (data)
        memcpy(buf + 4 + 4 * ndim, data, n);
    total -= cut;
    if (gz) {
        write_gzip(path, buf, total);
    } else {
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(buf, 1, total, f), total);
        assert_int_equal(fclose(f), 0);
    }
    free(buf);
}

static void write_idx(const char *path, bool gz, int ndim, const uint32_t *dims,
                      const uint8_t *data)
{
    write_idx_ex(path, gz, 0x08, ndim, dims, data, 0, 0);
}

/* n images of 2x2 pixels: pixel k of sample i is (4i + k) % 256; label i % classes. */
static void write_pair(const char *images, const char *labels, bool gz, uint32_t n,
                       int classes)
{
    uint8_t *im = malloc(4 * (size_t)n), *lb = malloc(n);
    assert_true(im && lb);
    for (uint32_t i = 0; i < n; i++) {
        for (int k = 0; k < 4; k++)
            im[4 * i + k] = (uint8_t)((4 * i + (uint32_t)k) % 256);
        lb[i] = (uint8_t)(i % (uint32_t)classes);
    }
    uint32_t idims[3] = {n, 2, 2};
    write_idx(images, gz, 3, idims, im);
    write_idx(labels, gz, 1, &n, lb);
    free(im);
    free(lb);
}

static void assert_error_mentions(const char *a, const char *b)
{
    const char *msg = anvil_last_error();
    if (a && !strstr(msg, a))
        fail_msg("error message \"%s\" does not mention \"%s\"", msg, a);
    if (b && !strstr(msg, b))
        fail_msg("error message \"%s\" does not mention \"%s\"", msg, b);
}

/* ---------------------------------------------------------------- IDX */

static void idx_round_trip(bool gz)
{
    char p[512];
    tpath(p, sizeof p, gz ? "rt.idx.gz" : "rt.idx");
    uint8_t data[3 * 4 * 5];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)(i * 7 + 3);
    uint32_t dims[3] = {3, 4, 5};
    write_idx(p, gz, 3, dims, data);
    anvil_idx idx;
    assert_int_equal(anvil_idx_read(p, &idx), ANVIL_OK);
    assert_int_equal(idx.ndim, 3);
    assert_int_equal(idx.dims[0], 3);
    assert_int_equal(idx.dims[1], 4);
    assert_int_equal(idx.dims[2], 5);
    assert_int_equal(idx.bytes, sizeof data);
    assert_memory_equal(idx.data, data, sizeof data);
    anvil_idx_free(&idx);
}

static void test_idx_plain(void **state) { (void)state; idx_round_trip(false); }
static void test_idx_gzip(void **state) { (void)state; idx_round_trip(true); }

static void test_idx_truncated(void **state)
{
    (void)state;
    char p[512];
    uint8_t data[60] = {0};
    uint32_t dims[3] = {3, 4, 5};
    anvil_idx idx;
    for (int gz = 0; gz < 2; gz++) {
        tpath(p, sizeof p, gz ? "trunc.idx.gz" : "trunc.idx");
        write_idx_ex(p, gz, 0x08, 3, dims, data, 7, 0);
        assert_int_equal(anvil_idx_read(p, &idx), ANVIL_ERR_FORMAT);
        assert_error_mentions(p, "truncated");
        assert_error_mentions("60", "53"); /* expected vs got */
        assert_null(idx.data);
    }
    /* cut inside the header's dimensions */
    tpath(p, sizeof p, "trunc_header.idx");
    write_idx_ex(p, false, 0x08, 3, dims, data, 60 + 6, 0);
    assert_int_equal(anvil_idx_read(p, &idx), ANVIL_ERR_FORMAT);
    assert_error_mentions(p, "truncated");
    /* an empty file */
    tpath(p, sizeof p, "empty.idx");
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(anvil_idx_read(p, &idx), ANVIL_ERR_FORMAT);
    assert_error_mentions(p, "truncated");
    /* a gzip stream cut in the middle (the compressed bytes, not the content) */
    char gzp[512];
    tpath(gzp, sizeof gzp, "cut_stream.idx.gz");
    uint8_t big[4096];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 2654435761u >> 24);
    uint32_t bd[2] = {64, 64};
    write_idx(gzp, true, 2, bd, big);
    FILE *g = fopen(gzp, "rb");
    assert_non_null(g);
    uint8_t comp[8192];
    size_t cn = fread(comp, 1, sizeof comp, g);
    fclose(g);
    g = fopen(gzp, "wb");
    assert_non_null(g);
    fwrite(comp, 1, cn / 2, g);
    fclose(g);
    anvil_status s = anvil_idx_read(gzp, &idx);
    assert_int_equal(s, ANVIL_ERR_FORMAT);
    assert_error_mentions(gzp, NULL);
}

static void test_idx_gzip_corrupt(void **state)
{
    (void)state;
    char p[512];
    tpath(p, sizeof p, "crc.idx.gz");
    uint8_t data[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    uint32_t dims[2] = {3, 4};
    write_idx(p, true, 2, dims, data);
    FILE *f = fopen(p, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, -8, SEEK_END), 0); /* the CRC-32 of the trailer */
    int c = fgetc(f);
    assert_int_equal(fseek(f, -8, SEEK_END), 0);
    fputc(c ^ 0x55, f);
    fclose(f);
    anvil_idx idx;
    assert_int_equal(anvil_idx_read(p, &idx), ANVIL_ERR_FORMAT);
    assert_error_mentions(p, "gzip");
    assert_null(idx.data);
}

static void test_idx_trailing_bytes(void **state)
{
    (void)state;
    char p[512];
    tpath(p, sizeof p, "long.idx");
    uint8_t data[6] = {1, 2, 3, 4, 5, 6};
    uint32_t dims[2] = {2, 3};
    write_idx_ex(p, false, 0x08, 2, dims, data, 0, 5);
    anvil_idx idx;
    assert_int_equal(anvil_idx_read(p, &idx), ANVIL_ERR_FORMAT);
    assert_error_mentions(p, "5 more");
}

static void test_idx_bad_magic(void **state)
{
    (void)state;
    char p[512];
    tpath(p, sizeof p, "magic.idx");
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    const uint8_t junk[16] = {0x1f, 0x33, 0x08, 0x01, 0, 0, 0, 1, 9};
    fwrite(junk, 1, sizeof junk, f);
    fclose(f);
    anvil_idx idx;
    assert_int_equal(anvil_idx_read(p, &idx), ANVIL_ERR_FORMAT);
    assert_error_mentions(p, "magic");
    /* a valid magic with 0 dimensions, or too many */
    uint32_t dims[1] = {1};
    write_idx_ex(p, false, 0x08, 0, dims, NULL, 0, 0);
    assert_int_equal(anvil_idx_read(p, &idx), ANVIL_ERR_FORMAT);
    assert_error_mentions(p, "dimensions");
    /* a zero dimension */
    uint32_t zd[2] = {2, 0};
    write_idx(p, false, 2, zd, NULL);
    assert_int_equal(anvil_idx_read(p, &idx), ANVIL_ERR_FORMAT);
    assert_error_mentions(p, "is 0");
}

static void test_idx_wrong_dtype(void **state)
{
    (void)state;
    char p[512];
    tpath(p, sizeof p, "float.idx");
    uint8_t data[8] = {0};
    uint32_t dims[1] = {2};
    write_idx_ex(p, false, 0x0D, 1, dims, data, 0, 0); /* float32 elements */
    anvil_idx idx;
    assert_int_equal(anvil_idx_read(p, &idx), ANVIL_ERR_UNSUPPORTED);
    assert_error_mentions(p, "float32");
    write_idx_ex(p, false, 0x42, 1, dims, data, 0, 0); /* no IDX type at all */
    assert_int_equal(anvil_idx_read(p, &idx), ANVIL_ERR_FORMAT);
    assert_error_mentions(p, "0x42");
}

static void test_idx_missing(void **state)
{
    (void)state;
    char p[512];
    tpath(p, sizeof p, "does-not-exist.idx");
    anvil_idx idx;
    assert_int_equal(anvil_idx_read(p, &idx), ANVIL_ERR_IO);
    assert_error_mentions(p, NULL);
}

/* ---------------------------------------------------------------- datasets */

static void test_dataset_load(void **state)
{
    (void)state;
    char ip[512], lp[512];
    write_pair(tpath(ip, sizeof ip, "ds-images"), tpath(lp, sizeof lp, "ds-labels"), false, 7, 3);
    anvil_dataset *d = NULL;
    assert_int_equal(anvil_dataset_load_idx(&d, ip, lp), ANVIL_OK);
    assert_int_equal(anvil_dataset_size(d), 7);
    int64_t shape[ANVIL_MAX_DIMS];
    assert_int_equal(anvil_dataset_sample_shape(d, shape), 3);
    assert_int_equal(shape[0], 1);
    assert_int_equal(shape[1], 2);
    assert_int_equal(shape[2], 2);
    assert_int_equal(anvil_dataset_classes(d), 3);
    assert_int_equal(d->images[4 * 5 + 2], 22);
    assert_int_equal(d->labels[5], 2);
    assert_int_equal(d->labels_u8[4], 1);
    anvil_dataset_free(d);

    /* 2-D images [N, D] keep their shape: samples are [D] */
    uint8_t v[6] = {1, 2, 3, 4, 5, 6}, l[2] = {0, 4};
    uint32_t vd[2] = {2, 3}, ld[1] = {2};
    write_idx(tpath(ip, sizeof ip, "vec-images"), false, 2, vd, v);
    write_idx(tpath(lp, sizeof lp, "vec-labels"), false, 1, ld, l);
    assert_int_equal(anvil_dataset_load_idx(&d, ip, lp), ANVIL_OK);
    assert_int_equal(anvil_dataset_sample_shape(d, shape), 1);
    assert_int_equal(shape[0], 3);
    assert_int_equal(anvil_dataset_classes(d), 5);
    anvil_dataset_free(d);
}

static void test_dataset_count_mismatch(void **state)
{
    (void)state;
    char ip[512], lp[512], ip2[512], lp2[512];
    write_pair(tpath(ip, sizeof ip, "cm-images"), tpath(lp, sizeof lp, "cm-labels"), true, 5, 2);
    write_pair(tpath(ip2, sizeof ip2, "cm-images6"), tpath(lp2, sizeof lp2, "cm-labels6"), true,
               6, 2);
    anvil_dataset *d = (anvil_dataset *)1;
    assert_int_equal(anvil_dataset_load_idx(&d, ip, lp2), ANVIL_ERR_FORMAT);
    assert_null(d);
    assert_error_mentions(ip, lp2);
    assert_error_mentions("5", "6");
    /* labels must be 1-D; images need a sample dimension */
    assert_int_equal(anvil_dataset_load_idx(&d, ip, ip), ANVIL_ERR_FORMAT);
    assert_error_mentions(ip, "labels");
    assert_int_equal(anvil_dataset_load_idx(&d, lp, lp), ANVIL_ERR_FORMAT);
    assert_error_mentions(lp, NULL);
    /* a missing labels file */
    char miss[512];
    assert_int_equal(anvil_dataset_load_idx(&d, ip, tpath(miss, sizeof miss, "nope")), ANVIL_ERR_IO);
    assert_error_mentions(miss, NULL);
}

static void test_dataset_folder(void **state)
{
    (void)state;
    char dir[512], a[600], b[600];
    tpath(dir, sizeof dir, "folder");
    assert_int_equal(mkdir(dir, 0700), 0);
    snprintf(a, sizeof a, "%s/train-images-idx3-ubyte.gz", dir);
    snprintf(b, sizeof b, "%s/train-labels-idx1-ubyte.gz", dir);
    write_pair(a, b, true, 9, 4);
    snprintf(a, sizeof a, "%s/t10k-images-idx3-ubyte", dir);
    snprintf(b, sizeof b, "%s/t10k-labels-idx1-ubyte", dir);
    write_pair(a, b, false, 4, 2);
    anvil_dataset *tr = NULL, *te = NULL;
    assert_int_equal(anvil_dataset_load_folder(&tr, &te, dir), ANVIL_OK);
    assert_int_equal(anvil_dataset_size(tr), 9);
    assert_int_equal(anvil_dataset_size(te), 4);
    assert_int_equal(anvil_dataset_classes(tr), 4);
    assert_int_equal(anvil_dataset_classes(te), 2);
    anvil_dataset_free(tr);
    anvil_dataset_free(te);
    /* only the test split */
    assert_int_equal(anvil_dataset_load_folder(NULL, &te, dir), ANVIL_OK);
    assert_int_equal(anvil_dataset_size(te), 4);
    anvil_dataset_free(te);

    unlink(b);
    assert_int_equal(anvil_dataset_load_folder(&tr, &te, dir), ANVIL_ERR_IO);
    assert_null(tr);
    assert_null(te);
    assert_error_mentions(dir, "t10k-labels-idx1-ubyte");
    char nodir[600];
    snprintf(nodir, sizeof nodir, "%s/no-such-folder", tmpdir);
    assert_int_equal(anvil_dataset_load_folder(&tr, &te, nodir), ANVIL_ERR_IO);
    assert_error_mentions(nodir, NULL);
}

/* ---------------------------------------------------------------- batcher */

/* A dataset of n samples whose label is the sample index (n <= 64 keeps pixels unique). */
static anvil_dataset *index_dataset(uint32_t n)
{
    char ip[512], lp[512], name[64];
    snprintf(name, sizeof name, "bx-images-%u", n);
    tpath(ip, sizeof ip, name);
    snprintf(name, sizeof name, "bx-labels-%u", n);
    tpath(lp, sizeof lp, name);
    write_pair(ip, lp, false, n, (int)n);
    anvil_dataset *d = NULL;
    assert_int_equal(anvil_dataset_load_idx(&d, ip, lp), ANVIL_OK);
    return d;
}

/* One epoch's sample order (from y), checking x against it and the batch sizes. */
static void run_epoch(anvil_batcher *b, int64_t n, int bs, int32_t *order)
{
    int64_t pos = 0;
    for (;;) {
        anvil_tensor *x, *y;
        bool done;
        assert_int_equal(anvil_batcher_next(b, &x, &y, &done), ANVIL_OK);
        if (done) {
            assert_null(x);
            assert_null(y);
            break;
        }
        int64_t B = anvil_tensor_shape(y)[0];
        assert_int_equal(B, n - pos < bs ? n - pos : bs);
        assert_int_equal(anvil_tensor_dtype(x), ANVIL_F32);
        assert_int_equal(anvil_tensor_dtype(y), ANVIL_I32);
        assert_int_equal(anvil_tensor_ndim(x), 4);
        assert_int_equal(anvil_tensor_shape(x)[0], B);
        assert_int_equal(anvil_tensor_shape(x)[1], 1);
        assert_int_equal(anvil_tensor_shape(x)[2], 2);
        assert_int_equal(anvil_tensor_shape(x)[3], 2);
        const float *xd = anvil_tensor_cdata(x);
        const int32_t *yd = anvil_tensor_cdata(y);
        for (int64_t i = 0; i < B; i++) {
            order[pos + i] = yd[i];
            for (int k = 0; k < 4; k++) {
                uint8_t pix = (uint8_t)((4 * yd[i] + k) % 256);
                assert_true(xd[4 * i + k] == (float)pix / 255.0f);
            }
        }
        pos += B;
        anvil_tensor_release(x);
        anvil_tensor_release(y);
    }
    assert_int_equal(pos, n);
}

static bool is_permutation(const int32_t *o, int64_t n)
{
    bool seen[256] = {false};
    for (int64_t i = 0; i < n; i++) {
        if (o[i] < 0 || o[i] >= n || seen[o[i]])
            return false;
        seen[o[i]] = true;
    }
    return true;
}

static void test_batcher_no_shuffle(void **state)
{
    (void)state;
    anvil_dataset *d = index_dataset(10);
    anvil_batcher *b = NULL;
    assert_int_equal(anvil_batcher_create(&b, d, 4, false, 123), ANVIL_OK);
    assert_int_equal(anvil_batcher_batches_per_epoch(b), 3);
    int32_t order[10];
    for (int epoch = 0; epoch < 2; epoch++) {
        run_epoch(b, 10, 4, order);
        for (int i = 0; i < 10; i++)
            assert_int_equal(order[i], i);
    }
    anvil_batcher_free(b);
    /* a batch larger than the dataset is one partial batch */
    assert_int_equal(anvil_batcher_create(&b, d, 64, false, 0), ANVIL_OK);
    assert_int_equal(anvil_batcher_batches_per_epoch(b), 1);
    run_epoch(b, 10, 64, order);
    anvil_batcher_free(b);
    anvil_dataset_free(d);
}

static void test_batcher_shuffle(void **state)
{
    (void)state;
    const int n = 50, bs = 8;
    anvil_dataset *d = index_dataset((uint32_t)n);
    anvil_batcher *b1, *b2, *b3;
    assert_int_equal(anvil_batcher_create(&b1, d, bs, true, 42), ANVIL_OK);
    assert_int_equal(anvil_batcher_create(&b2, d, bs, true, 42), ANVIL_OK);
    assert_int_equal(anvil_batcher_create(&b3, d, bs, true, 43), ANVIL_OK);
    assert_int_equal(anvil_batcher_batches_per_epoch(b1), 7);
    int32_t o1[2][50], o2[2][50], o3[50];
    for (int e = 0; e < 2; e++) {
        run_epoch(b1, n, bs, o1[e]);
        run_epoch(b2, n, bs, o2[e]);
        assert_true(is_permutation(o1[e], n));
        assert_memory_equal(o1[e], o2[e], sizeof o1[e]); /* same seed, same order */
    }
    run_epoch(b3, n, bs, o3);
    assert_true(is_permutation(o3, n));
    assert_memory_not_equal(o1[0], o3, sizeof o3);       /* another seed, another order */
    assert_memory_not_equal(o1[0], o1[1], sizeof o3);    /* a fresh order every epoch */
    int moved = 0;
    for (int i = 0; i < n; i++)
        moved += o1[0][i] != i;
    assert_true(moved > n / 2);                          /* actually shuffled */
    anvil_batcher_free(b1);
    anvil_batcher_free(b2);
    anvil_batcher_free(b3);

    /* the order is a pure function of (seed, epoch) */
    uint32_t ord[50];
    anvil_shuffle_order(ord, n, true, 42, 1);
    for (int i = 0; i < n; i++)
        assert_int_equal((int32_t)ord[i], o1[1][i]);
    anvil_dataset_free(d);
}

static void test_batcher_pixels(void **state)
{
    (void)state;
    /* one sample holding every byte value: x must be exactly pixel / 255.0f */
    char ip[512], lp[512];
    uint8_t im[256], lb[1] = {0};
    for (int i = 0; i < 256; i++)
        im[i] = (uint8_t)i;
    uint32_t idims[3] = {1, 16, 16}, ld[1] = {1};
    write_idx(tpath(ip, sizeof ip, "px-images"), false, 3, idims, im);
    write_idx(tpath(lp, sizeof lp, "px-labels"), false, 1, ld, lb);
    anvil_dataset *d;
    assert_int_equal(anvil_dataset_load_idx(&d, ip, lp), ANVIL_OK);
    anvil_batcher *b;
    assert_int_equal(anvil_batcher_create(&b, d, 1, true, 9), ANVIL_OK);
    anvil_tensor *x, *y;
    bool done;
    assert_int_equal(anvil_batcher_next(b, &x, &y, &done), ANVIL_OK);
    assert_false(done);
    const float *xd = anvil_tensor_cdata(x);
    for (int i = 0; i < 256; i++)
        assert_true(xd[i] == (float)i / 255.0f);
    assert_true(xd[0] == 0.0f && xd[255] == 1.0f);
    anvil_tensor_release(x);
    anvil_tensor_release(y);
    anvil_batcher_free(b);
    anvil_dataset_free(d);
}

static void test_batcher_bad_args(void **state)
{
    (void)state;
    anvil_dataset *d = index_dataset(3);
    anvil_batcher *b = (anvil_batcher *)1;
    assert_int_equal(anvil_batcher_create(&b, d, 0, true, 1), ANVIL_ERR_INVALID_ARG);
    assert_null(b);
    assert_int_equal(anvil_batcher_create(&b, NULL, 4, true, 1), ANVIL_ERR_INVALID_ARG);
    assert_int_equal(anvil_batcher_create(&b, d, 2, false, 1), ANVIL_OK);
    bool done;
    assert_int_equal(anvil_batcher_next(b, NULL, NULL, &done), ANVIL_ERR_INVALID_ARG);
    anvil_batcher_free(b);
    anvil_batcher_free(NULL);
    anvil_dataset_free(NULL);
    anvil_dataset_free(d);
}

/* ---------------------------------------------------------------- Fashion-MNIST */

static void test_fashion_mnist(void **state)
{
    (void)state;
    struct stat st;
    if (stat(ANVIL_DEFAULT_DATA_DIR, &st) != 0) {
        print_message("%s is absent (Debian package dataset-fashion-mnist): skipped\n",
                      ANVIL_DEFAULT_DATA_DIR);
        skip();
    }
    anvil_dataset *tr = NULL, *te = NULL;
    assert_int_equal(anvil_dataset_load_folder(&tr, &te, ANVIL_DEFAULT_DATA_DIR), ANVIL_OK);
    assert_int_equal(anvil_dataset_size(tr), 60000);
    assert_int_equal(anvil_dataset_size(te), 10000);
    int64_t shape[ANVIL_MAX_DIMS];
    assert_int_equal(anvil_dataset_sample_shape(tr, shape), 3);
    assert_int_equal(shape[0], 1);
    assert_int_equal(shape[1], 28);
    assert_int_equal(shape[2], 28);
    assert_int_equal(anvil_dataset_classes(tr), 10);
    assert_int_equal(anvil_dataset_classes(te), 10);
    /* the first training label of Fashion-MNIST is 9 (ankle boot) */
    assert_int_equal(tr->labels[0], 9);
    anvil_batcher *b;
    assert_int_equal(anvil_batcher_create(&b, tr, 128, true, 0), ANVIL_OK);
    assert_int_equal(anvil_batcher_batches_per_epoch(b), 469);
    int64_t batches = 0, samples = 0;
    for (;;) {
        anvil_tensor *x, *y;
        bool done;
        assert_int_equal(anvil_batcher_next(b, &x, &y, &done), ANVIL_OK);
        if (done)
            break;
        batches++;
        samples += anvil_tensor_shape(x)[0];
        anvil_tensor_release(x);
        anvil_tensor_release(y);
    }
    assert_int_equal(batches, 469);
    assert_int_equal(samples, 60000);
    anvil_batcher_free(b);
    anvil_dataset_free(tr);
    anvil_dataset_free(te);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idx_plain),
        cmocka_unit_test(test_idx_gzip),
        cmocka_unit_test(test_idx_truncated),
        cmocka_unit_test(test_idx_gzip_corrupt),
        cmocka_unit_test(test_idx_trailing_bytes),
        cmocka_unit_test(test_idx_bad_magic),
        cmocka_unit_test(test_idx_wrong_dtype),
        cmocka_unit_test(test_idx_missing),
        cmocka_unit_test(test_dataset_load),
        cmocka_unit_test(test_dataset_count_mismatch),
        cmocka_unit_test(test_dataset_folder),
        cmocka_unit_test(test_batcher_no_shuffle),
        cmocka_unit_test(test_batcher_shuffle),
        cmocka_unit_test(test_batcher_pixels),
        cmocka_unit_test(test_batcher_bad_args),
        cmocka_unit_test(test_fashion_mnist),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
