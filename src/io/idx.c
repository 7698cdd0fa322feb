/* idx.c — the IDX reader (MNIST / Fashion-MNIST files), plain or gzip-compressed.
 * zlib's gzread reads uncompressed files transparently, so one path serves both. */
#include "io/io.h"

#include <errno.h>
#include <inttypes.h>
#include <zlib.h>

/* gzread takes an unsigned int length: read big buffers in slices. */
#define IDX_SLICE ((size_t)1 << 30)
/* The buffer grows as data arrives (doubling from this), so a header that lies about a
 * huge size costs no more memory than the file really holds. */
#define IDX_FIRST_CAP ((size_t)16 << 20)

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static const char *idx_dtype_name(int code)
{
    switch (code) {
    case 0x08: return "uint8";
    case 0x09: return "int8";
    case 0x0B: return "int16";
    case 0x0C: return "int32";
    case 0x0D: return "float32";
    case 0x0E: return "float64";
    default: return NULL;
    }
}

/* A gzread failure: the OS (ANVIL_ERR_IO) or the compressed stream (ANVIL_ERR_FORMAT). */
static anvil_status gz_failure(gzFile f, const char *path, const char *what)
{
    int err = 0;
    const char *msg = gzerror(f, &err);
    if (err == Z_ERRNO)
        return anvil_fail(ANVIL_ERR_IO, "cannot read IDX file '%s' (%s): %s", path, what,
                          strerror(errno));
    return anvil_fail(ANVIL_ERR_FORMAT, "IDX file '%s': corrupt gzip data in the %s: %s", path,
                      what, msg ? msg : "unknown zlib error");
}

/* Reads up to n bytes; *got says how many arrived (fewer only at the end of the file). */
static anvil_status read_some(gzFile f, const char *path, const char *what, uint8_t *buf,
                              size_t n, size_t *got)
{
    *got = 0;
    while (*got < n) {
        size_t want = n - *got < IDX_SLICE ? n - *got : IDX_SLICE;
        int r = gzread(f, buf + *got, (unsigned)want);
        if (r < 0) {
            int err = 0;
            gzerror(f, &err);
            if (err == Z_BUF_ERROR) /* a gzip stream cut short: report it as truncation */
                return ANVIL_OK;
            return gz_failure(f, path, what);
        }
        if (r == 0)
            break;
        *got += (size_t)r;
    }
    return ANVIL_OK;
}

/* Counts what remains after the data the header promised (a clearer message than "too
 * long"); reading stops counting at 1 GiB. */
static anvil_status count_rest(gzFile f, const char *path, uint64_t *extra)
{
    uint8_t tmp[4096];
    *extra = 0;
    for (;;) {
        size_t got;
        ANVIL_TRY(read_some(f, path, "trailing data", tmp, sizeof tmp, &got));
        *extra += got;
        if (got < sizeof tmp || *extra >= ((uint64_t)1 << 30))
            return ANVIL_OK;
    }
}

static anvil_status read_header(gzFile f, const char *path, anvil_idx *out, uint64_t *bytes)
{
    uint8_t magic[4], dims[4 * ANVIL_MAX_DIMS];
    size_t got;
    ANVIL_TRY(read_some(f, path, "header", magic, 4, &got));
    if (got < 4)
        return anvil_fail(ANVIL_ERR_FORMAT,
                          "IDX file '%s' is truncated: %zu bytes, too short for the 4-byte magic",
                          path, got);
    uint32_t m = be32(magic);
    if (magic[0] != 0 || magic[1] != 0)
        return anvil_fail(ANVIL_ERR_FORMAT,
                          "IDX file '%s': bad magic 0x%08" PRIX32
                          " (expected 0x00000803 for images or 0x00000801 for labels)",
                          path, m);
    if (magic[2] != ANVIL_IDX_UBYTE) {
        /* a real IDX type we do not read is unsupported; any other byte is corruption */
        const char *tn = idx_dtype_name(magic[2]);
        return anvil_fail(tn ? ANVIL_ERR_UNSUPPORTED : ANVIL_ERR_FORMAT,
                          "IDX file '%s': element type 0x%02X (%s) is not supported; only 0x08 "
                          "(uint8) is read",
                          path, magic[2], tn ? tn : "not an IDX type");
    }
    int ndim = magic[3];
    if (ndim < 1 || ndim > ANVIL_MAX_DIMS)
        return anvil_fail(ANVIL_ERR_FORMAT, "IDX file '%s': %d dimensions (magic 0x%08" PRIX32
                          "); expected 1 to %d", path, ndim, m, ANVIL_MAX_DIMS);
    ANVIL_TRY(read_some(f, path, "header", dims, 4 * (size_t)ndim, &got));
    if (got < 4 * (size_t)ndim)
        return anvil_fail(ANVIL_ERR_FORMAT,
                          "IDX file '%s' is truncated in its header: %d dimensions need %d bytes, "
                          "got %zu", path, ndim, 4 * ndim, got);
    uint64_t total = 1;
    for (int i = 0; i < ndim; i++) {
        uint32_t d = be32(dims + 4 * i);
        if (d == 0)
            return anvil_fail(ANVIL_ERR_FORMAT, "IDX file '%s': dimension %d is 0 (no data)",
                              path, i);
        total *= d; /* at most 2^32 per factor: checked against the cap before overflow */
        if (total > ANVIL_IDX_MAX_BYTES)
            return anvil_fail(ANVIL_ERR_FORMAT,
                              "IDX file '%s': dimensions promise more than %" PRIu64
                              " bytes; the header is corrupt", path, ANVIL_IDX_MAX_BYTES);
        out->dims[i] = d;
    }
    out->ndim = ndim;
    *bytes = total;
    return ANVIL_OK;
}

static anvil_status read_data(gzFile f, const char *path, anvil_idx *out, size_t want)
{
    char shape[160];
    anvil_shape_str(shape, sizeof shape, out->ndim, out->dims);
    size_t cap = want < IDX_FIRST_CAP ? want : IDX_FIRST_CAP, have = 0;
    uint8_t *buf = anvil_xmalloc(cap, "IDX data");
    if (!buf)
        return ANVIL_ERR_OOM;
    for (;;) {
        size_t got;
        anvil_status s = read_some(f, path, "data", buf + have, cap - have, &got);
        if (s != ANVIL_OK) {
            free(buf);
            return s;
        }
        have += got;
        if (have < cap || cap == want)
            break;
        size_t ncap = cap * 2 < want ? cap * 2 : want;
        uint8_t *nb = anvil_xrealloc(buf, ncap, "IDX data");
        if (!nb) {
            free(buf);
            return ANVIL_ERR_OOM;
        }
        buf = nb;
        cap = ncap;
    }
    if (have < want) {
        free(buf);
        return anvil_fail(ANVIL_ERR_FORMAT,
                          "IDX file '%s' is truncated: its header %s promises %zu data bytes, "
                          "got %zu", path, shape, want, have);
    }
    uint64_t extra = 0;
    anvil_status s = count_rest(f, path, &extra);
    if (s == ANVIL_OK && extra)
        s = anvil_fail(ANVIL_ERR_FORMAT,
                       "IDX file '%s' is longer than its header %s says: %zu data bytes "
                       "expected, %" PRIu64 "%s more follow", path, shape, want, extra,
                       extra >= ((uint64_t)1 << 30) ? " or" : "");
    if (s != ANVIL_OK) {
        free(buf);
        return s;
    }
    out->data = buf;
    out->bytes = want;
    return ANVIL_OK;
}

anvil_status anvil_idx_read(const char *path, anvil_idx *out)
{
    if (!out)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_idx_read: out is NULL");
    memset(out, 0, sizeof *out);
    if (!path)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_idx_read: path is NULL");
    errno = 0;
    gzFile f = gzopen(path, "rb");
    if (!f)
        return anvil_fail(ANVIL_ERR_IO, "cannot open IDX file '%s': %s", path,
                          errno ? strerror(errno) : "out of memory");
    gzbuffer(f, 1 << 18);
    uint64_t bytes = 0;
    anvil_status s = read_header(f, path, out, &bytes);
    if (s == ANVIL_OK && bytes > SIZE_MAX)
        s = anvil_fail(ANVIL_ERR_UNSUPPORTED, "IDX file '%s' is too large for this host", path);
    if (s == ANVIL_OK)
        s = read_data(f, path, out, (size_t)bytes);
    gzclose_r(f);
    if (s != ANVIL_OK)
        memset(out, 0, sizeof *out);
    return s;
}

void anvil_idx_free(anvil_idx *idx)
{
    if (!idx)
        return;
    free(idx->data);
    memset(idx, 0, sizeof *idx);
}
