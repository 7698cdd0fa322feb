/* safetensors.c — read and write the safetensors format (what PyTorch's
 * safetensors.torch.save_file / load_file exchange):
 *
 *   u64 little-endian N | N bytes of JSON header, space-padded | the data buffer
 *
 * The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}
 * (offsets into the data buffer), plus an optional "__metadata__" {string: string}.
 * Reading trusts nothing: every length, offset and size is checked before use. */
#include "io/io.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_MAX_HEADER ((uint64_t)100 << 20) /* the reference implementation's limit */
#define ST_MAX_INT 9007199254740992.0       /* 2^53: integers a JSON double holds exactly */

/* Tensor data is written and read as stored: little-endian, like the format. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

static const struct {
    const char *name;
    anvil_dtype dtype;
} st_dtypes[] = {
    {"F32", ANVIL_F32}, {"I32", ANVIL_I32}, {"U8", ANVIL_U8}, {"BF16", ANVIL_BF16}, {"I64", ANVIL_I64},
};

/* Valid safetensors dtypes that Anvil has no tensor type for (so: unsupported, not corrupt). */
static const char *const st_other_dtypes[] = {
    "BOOL", "I8", "I16", "U16", "F16", "U32", "U64", "F64", "C64",
    "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4",
};

static const char *st_dtype_name(anvil_dtype t)
{
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (st_dtypes[i].dtype == t)
            return st_dtypes[i].name;
    return NULL;
}

/* ---------------------------------------------------------------- reading */

typedef struct {
    const char *name;  /* points into the cJSON tree */
    anvil_dtype dtype;
    int ndim;
    int64_t shape[ANVIL_MAX_DIMS];
    uint64_t begin, end;
} st_entry;

/* A JSON number that is a non-negative integer a double holds exactly. */
static bool json_uint(const cJSON *j, uint64_t *out)
{
    if (!cJSON_IsNumber(j))
        return false;
    double d = j->valuedouble;
    if (!(d >= 0.0) || d > ST_MAX_INT || d != floor(d))
        return false;
    *out = (uint64_t)d;
    return true;
}

static anvil_status parse_dtype(const char *path, const char *name, const cJSON *j,
                                anvil_dtype *out)
{
    if (!cJSON_IsString(j))
        return anvil_fail(ANVIL_ERR_FORMAT, "safetensors file '%s': tensor '%s' has no \"dtype\" "
                          "string", path, name);
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (strcmp(j->valuestring, st_dtypes[i].name) == 0) {
            *out = st_dtypes[i].dtype;
            return ANVIL_OK;
        }
    for (size_t i = 0; i < sizeof st_other_dtypes / sizeof st_other_dtypes[0]; i++)
        if (strcmp(j->valuestring, st_other_dtypes[i]) == 0)
            return anvil_fail(ANVIL_ERR_UNSUPPORTED,
                              "safetensors file '%s': tensor '%s' has dtype %s, which Anvil does "
                              "not support (F32, I32, U8, BF16, I64)", path, name, j->valuestring);
    return anvil_fail(ANVIL_ERR_FORMAT, "safetensors file '%s': tensor '%s' has unknown dtype '%s'",
                      path, name, j->valuestring);
}

/* One header entry: dtype, shape, offsets, and that they agree with each other and with
 * the buffer. */
static anvil_status parse_entry(const char *path, const cJSON *j, uint64_t buflen, st_entry *e)
{
    const char *name = j->string;
    e->name = name;
    if (!cJSON_IsObject(j))
        return anvil_fail(ANVIL_ERR_FORMAT, "safetensors file '%s': the entry of tensor '%s' is "
                          "not a JSON object", path, name);
    ANVIL_TRY(parse_dtype(path, name, cJSON_GetObjectItemCaseSensitive(j, "dtype"), &e->dtype));

    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(j, "shape");
    if (!cJSON_IsArray(shape))
        return anvil_fail(ANVIL_ERR_FORMAT, "safetensors file '%s': tensor '%s' has no \"shape\" "
                          "array", path, name);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > ANVIL_MAX_DIMS)
        return anvil_fail(ANVIL_ERR_UNSUPPORTED, "safetensors file '%s': tensor '%s' has %d "
                          "dimensions; Anvil supports at most %d", path, name, ndim, ANVIL_MAX_DIMS);
    uint64_t numel = 1;
    bool overflow = false;
    int i = 0;
    for (const cJSON *d = shape->child; d; d = d->next, i++) {
        uint64_t v;
        if (!json_uint(d, &v))
            return anvil_fail(ANVIL_ERR_FORMAT, "safetensors file '%s': tensor '%s': shape entry "
                              "%d is not a non-negative integer", path, name, i);
        e->shape[i] = (int64_t)v;
        if (v && numel > UINT64_MAX / v)
            overflow = true;
        numel *= v;
    }
    e->ndim = ndim;

    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(j, "data_offsets");
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 || !json_uint(offs->child, &e->begin) ||
        !json_uint(offs->child->next, &e->end))
        return anvil_fail(ANVIL_ERR_FORMAT, "safetensors file '%s': tensor '%s' needs "
                          "\"data_offsets\": [begin, end] of non-negative integers", path, name);
    if (e->begin > e->end || e->end > buflen)
        return anvil_fail(ANVIL_ERR_FORMAT, "safetensors file '%s': tensor '%s': data_offsets [%"
                          PRIu64 ", %" PRIu64 "] lie outside the %" PRIu64 "-byte data buffer",
                          path, name, e->begin, e->end, buflen);
    size_t es = anvil_dtype_size(e->dtype);
    uint64_t span = e->end - e->begin;
    if (overflow || numel > UINT64_MAX / es || numel * es != span) {
        char sh[160], need[48];
        if (overflow || numel > UINT64_MAX / es)
            snprintf(need, sizeof need, "more than 2^64");
        else
            snprintf(need, sizeof need, "%" PRIu64, numel * es);
        return anvil_fail(ANVIL_ERR_FORMAT, "safetensors file '%s': tensor '%s': shape %s of %s "
                          "needs %s bytes but data_offsets [%" PRIu64 ", %" PRIu64 "] span %"
                          PRIu64, path, name, anvil_shape_str(sh, sizeof sh, ndim, e->shape),
                          st_dtype_name(e->dtype), need, e->begin, e->end, span);
    }
    return ANVIL_OK;
}

static anvil_status parse_metadata(const char *path, const cJSON *j)
{
    if (!cJSON_IsObject(j))
        return anvil_fail(ANVIL_ERR_FORMAT, "safetensors file '%s': \"__metadata__\" is not an "
                          "object", path);
    for (const cJSON *m = j->child; m; m = m->next)
        if (!cJSON_IsString(m))
            return anvil_fail(ANVIL_ERR_FORMAT, "safetensors file '%s': \"__metadata__\" entry "
                              "'%s' is not a string", path, m->string);
    return ANVIL_OK;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp((*(const st_entry *const *)a)->name, (*(const st_entry *const *)b)->name);
}

static int cmp_begin(const void *a, const void *b)
{
    const st_entry *x = *(const st_entry *const *)a, *y = *(const st_entry *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* Names unique, byte ranges disjoint (empty tensors take no room and never collide). */
static anvil_status check_entries(const char *path, st_entry *e, int n)
{
    if (n < 2)
        return ANVIL_OK;
    st_entry **p = anvil_xmalloc((size_t)n * sizeof *p, "safetensors entry index");
    if (!p)
        return ANVIL_ERR_OOM;
    for (int i = 0; i < n; i++)
        p[i] = &e[i];
    anvil_status s = ANVIL_OK;
    qsort(p, (size_t)n, sizeof *p, cmp_name);
    for (int i = 1; i < n && s == ANVIL_OK; i++)
        if (strcmp(p[i - 1]->name, p[i]->name) == 0)
            s = anvil_fail(ANVIL_ERR_FORMAT, "safetensors file '%s': tensor name '%s' appears "
                           "more than once", path, p[i]->name);
    if (s == ANVIL_OK) {
        qsort(p, (size_t)n, sizeof *p, cmp_begin);
        const st_entry *prev = NULL;
        for (int i = 0; i < n && s == ANVIL_OK; i++) {
            if (p[i]->begin == p[i]->end)
                continue;
            if (prev && p[i]->begin < prev->end)
                s = anvil_fail(ANVIL_ERR_FORMAT, "safetensors file '%s': tensors '%s' [%" PRIu64
                               ", %" PRIu64 "] and '%s' [%" PRIu64 ", %" PRIu64 "] overlap",
                               path, prev->name, prev->begin, prev->end, p[i]->name,
                               p[i]->begin, p[i]->end);
            prev = p[i];
        }
    }
    free(p);
    return s;
}

/* "line 1, byte 17: near 'xyz...'" for a JSON syntax error. */
static void json_error_where(const char *text, size_t len, const char *at, char *buf, size_t cap)
{
    size_t off = at && at >= text && at <= text + len ? (size_t)(at - text) : 0;
    char near[24];
    size_t k = 0;
    for (; k + 1 < sizeof near && off + k < len; k++) {
        char c = text[off + k];
        near[k] = c >= 0x20 && c < 0x7f ? c : ' ';
    }
    near[k] = '\0';
    snprintf(buf, cap, "at byte %zu of the header, near '%s'", off, near);
}

/* The tensors of one parsed header, each read from its byte range. */
static anvil_status read_tensors(FILE *f, const char *path, uint64_t data_start, st_entry *e,
                                 int n, char **names, anvil_tensor **tensors)
{
    for (int i = 0; i < n; i++) {
        names[i] = anvil_xstrdup(e[i].name);
        if (!names[i])
            return ANVIL_ERR_OOM;
        ANVIL_TRY(anvil_tensor_create(&tensors[i], e[i].dtype, e[i].ndim, e[i].shape, NULL));
        size_t bytes = (size_t)(e[i].end - e[i].begin);
        if (!bytes)
            continue;
        if (fseeko(f, (off_t)(data_start + e[i].begin), SEEK_SET) != 0)
            return anvil_fail(ANVIL_ERR_IO, "safetensors file '%s': cannot seek to tensor '%s': %s",
                              path, e[i].name, strerror(errno));
        size_t got = fread(anvil_tensor_data(tensors[i]), 1, bytes, f);
        if (got != bytes)
            return anvil_fail(ferror(f) ? ANVIL_ERR_IO : ANVIL_ERR_FORMAT,
                              "safetensors file '%s': tensor '%s': read %zu of %zu bytes (the file "
                              "changed while being read?)", path, e[i].name, got, bytes);
    }
    return ANVIL_OK;
}

/* Everything after the file is open: header length, header, entries, data. */
static anvil_status read_file(FILE *f, const char *path, int *count, char ***names_out,
                              anvil_tensor ***tensors_out)
{
    struct stat st;
    if (fstat(fileno(f), &st) != 0)
        return anvil_fail(ANVIL_ERR_IO, "safetensors file '%s': %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return anvil_fail(ANVIL_ERR_IO, "safetensors file '%s' is not a regular file", path);
    uint64_t size = (uint64_t)st.st_size;
    uint8_t lenb[8];
    if (size < 8 || fread(lenb, 1, 8, f) != 8)
        return anvil_fail(ANVIL_ERR_FORMAT, "safetensors file '%s' is truncated: %" PRIu64 " bytes, "
                          "too short for the 8-byte header length", path, size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | lenb[i];
    if (hlen > size - 8)
        return anvil_fail(ANVIL_ERR_FORMAT, "safetensors file '%s': header length %" PRIu64
                          " runs past the end of the file (%" PRIu64 " bytes follow the length)",
                          path, hlen, size - 8);
    if (hlen < 2 || hlen > ST_MAX_HEADER)
        return anvil_fail(ANVIL_ERR_FORMAT, "safetensors file '%s': header length %" PRIu64
                          " is outside 2..%" PRIu64, path, hlen, ST_MAX_HEADER);
    uint64_t buflen = size - 8 - hlen;

    char *text = anvil_xmalloc((size_t)hlen + 1, "a safetensors header");
    if (!text)
        return ANVIL_ERR_OOM;
    if (fread(text, 1, (size_t)hlen, f) != hlen) {
        free(text);
        return anvil_fail(ANVIL_ERR_IO, "safetensors file '%s': cannot read the %" PRIu64
                          "-byte header", path, hlen);
    }
    text[hlen] = '\0';
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, (size_t)hlen, &end, false);
    char where[96];
    anvil_status s = ANVIL_OK;
    if (!root) {
        json_error_where(text, (size_t)hlen, end, where, sizeof where);
        s = anvil_fail(ANVIL_ERR_FORMAT, "safetensors file '%s': malformed JSON header %s", path,
                       where);
    } else {
        while (end && end < text + hlen && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
            end++;
        if (!cJSON_IsObject(root))
            s = anvil_fail(ANVIL_ERR_FORMAT, "safetensors file '%s': the header is not a JSON "
                           "object", path);
        else if (end != text + hlen) {
            json_error_where(text, (size_t)hlen, end, where, sizeof where);
            s = anvil_fail(ANVIL_ERR_FORMAT, "safetensors file '%s': unexpected bytes after the "
                           "JSON header %s", path, where);
        }
    }

    int n = 0;
    st_entry *e = NULL;
    char **names = NULL;
    anvil_tensor **tensors = NULL;
    if (s == ANVIL_OK) {
        int total = cJSON_GetArraySize(root);
        e = anvil_xcalloc((size_t)total + 1, sizeof *e, "safetensors entries");
        if (!e)
            s = ANVIL_ERR_OOM;
        for (const cJSON *j = root->child; j && s == ANVIL_OK; j = j->next) {
            if (strcmp(j->string, "__metadata__") == 0)
                s = parse_metadata(path, j);
            else
                s = parse_entry(path, j, buflen, &e[n++]);
        }
    }
    if (s == ANVIL_OK)
        s = check_entries(path, e, n);
    if (s == ANVIL_OK) {
        names = anvil_xcalloc((size_t)n + 1, sizeof *names, "safetensors names");
        tensors = anvil_xcalloc((size_t)n + 1, sizeof *tensors, "safetensors tensors");
        s = names && tensors ? read_tensors(f, path, 8 + hlen, e, n, names, tensors) : ANVIL_ERR_OOM;
    }
    if (s == ANVIL_OK) {
        *count = n;
        *names_out = names;
        *tensors_out = tensors;
    } else {
        anvil_safetensors_free(names && tensors ? n : 0, names, tensors);
    }
    free(e);
    cJSON_Delete(root);
    free(text);
    return s;
}

anvil_status anvil_safetensors_read(const char *path, int *count, char ***names,
                                    anvil_tensor ***tensors)
{
    if (!count || !names || !tensors || !path)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_safetensors_read: NULL argument");
    *count = 0;
    *names = NULL;
    *tensors = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return anvil_fail(ANVIL_ERR_IO, "cannot open safetensors file '%s': %s", path,
                          strerror(errno));
    anvil_status s = read_file(f, path, count, names, tensors);
    fclose(f);
    return s;
}

void anvil_safetensors_free(int count, char **names, anvil_tensor **tensors)
{
    for (int i = 0; i < count; i++) {
        if (names)
            free(names[i]);
        if (tensors)
            anvil_tensor_release(tensors[i]);
    }
    free(names);
    free(tensors);
}

/* ---------------------------------------------------------------- writing */

/* A growing string for the header; `oom` sticks so calls need no checks. */
typedef struct {
    char *p;
    size_t len, cap;
    bool oom;
} strbuf;

static void sb_put(strbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (b->len + n + 1 > cap)
            cap *= 2;
        char *p = anvil_xrealloc(b->p, cap, "a safetensors header");
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(strbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_u64(strbuf *b, uint64_t v)
{
    char t[24];
    sb_put(b, t, (size_t)snprintf(t, sizeof t, "%" PRIu64, v));
}

/* A JSON string literal; bytes >= 0x80 pass through (names are UTF-8). */
static void sb_json_string(strbuf *b, const char *s)
{
    sb_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char t[2] = {'\\', (char)c};
            sb_put(b, t, 2);
        } else if (c < 0x20) {
            char t[8];
            sb_put(b, t, (size_t)snprintf(t, sizeof t, "\\u%04x", c));
        } else {
            sb_put(b, s, 1);
        }
    }
    sb_put(b, "\"", 1);
}

static anvil_status check_write_args(const char *path, int count, const char *const *names,
                                     const anvil_tensor *const *tensors)
{
    if (!path || count < 0 || (count > 0 && (!names || !tensors)))
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "anvil_safetensors_write: bad arguments");
    for (int i = 0; i < count; i++) {
        if (!names[i] || !names[i][0] || strcmp(names[i], "__metadata__") == 0)
            return anvil_fail(ANVIL_ERR_INVALID_ARG, "safetensors file '%s': tensor %d has an "
                              "invalid name '%s'", path, i, names[i] ? names[i] : "(null)");
        if (!tensors[i])
            return anvil_fail(ANVIL_ERR_INVALID_ARG, "safetensors file '%s': tensor '%s' is NULL",
                              path, names[i]);
        if (!st_dtype_name(tensors[i]->dtype))
            return anvil_fail(ANVIL_ERR_INVALID_ARG, "safetensors file '%s': tensor '%s' has "
                              "invalid dtype %d", path, names[i], (int)tensors[i]->dtype);
        for (int k = 0; k < i; k++) /* O(n^2) but n is a model's parameter count */
            if (strcmp(names[k], names[i]) == 0)
                return anvil_fail(ANVIL_ERR_INVALID_ARG, "safetensors file '%s': tensor name '%s' "
                                  "given twice", path, names[i]);
    }
    return ANVIL_OK;
}

/* Data goes in order of decreasing element size, so every tensor is aligned to its
 * element size in the buffer (the header is padded to 8), as the reference writer does. */
static void layout(int count, const anvil_tensor *const *tensors, int *order, uint64_t *begin)
{
    int k = 0;
    for (size_t es = 8; es >= 1; es /= 2)
        for (int i = 0; i < count; i++)
            if (anvil_dtype_size(tensors[i]->dtype) == es)
                order[k++] = i;
    uint64_t off = 0;
    for (int i = 0; i < count; i++) {
        begin[order[i]] = off;
        off += anvil_tensor_nbytes(tensors[order[i]]);
    }
}

static anvil_status build_header(int count, const char *const *names,
                                 const anvil_tensor *const *tensors, const uint64_t *begin,
                                 strbuf *b)
{
    sb_str(b, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < count; i++) {
        const anvil_tensor *t = tensors[i];
        sb_str(b, ",");
        sb_json_string(b, names[i]);
        sb_str(b, ":{\"dtype\":\"");
        sb_str(b, st_dtype_name(t->dtype));
        sb_str(b, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            if (d)
                sb_str(b, ",");
            sb_u64(b, (uint64_t)t->shape[d]);
        }
        sb_str(b, "],\"data_offsets\":[");
        sb_u64(b, begin[i]);
        sb_str(b, ",");
        sb_u64(b, begin[i] + anvil_tensor_nbytes(t));
        sb_str(b, "]}");
    }
    sb_str(b, "}");
    while (b->len % 8)
        sb_str(b, " ");
    return b->oom ? ANVIL_ERR_OOM : ANVIL_OK;
}

static anvil_status write_all(FILE *f, const char *tmp, const void *p, size_t n)
{
    if (n && fwrite(p, 1, n, f) != n)
        return anvil_fail(ANVIL_ERR_IO, "cannot write '%s': %s", tmp, strerror(errno));
    return ANVIL_OK;
}

/* Writes the file at tmp, flushed to the disk. */
static anvil_status write_tmp(const char *tmp, const strbuf *hdr, int count,
                              const anvil_tensor *const *tensors, const int *order)
{
    FILE *f = fopen(tmp, "wb");
    if (!f)
        return anvil_fail(ANVIL_ERR_IO, "cannot create '%s': %s", tmp, strerror(errno));
    uint8_t lenb[8];
    for (int i = 0; i < 8; i++)
        lenb[i] = (uint8_t)((uint64_t)hdr->len >> (8 * i));
    anvil_status s = write_all(f, tmp, lenb, 8);
    if (s == ANVIL_OK)
        s = write_all(f, tmp, hdr->p, hdr->len);
    for (int i = 0; i < count && s == ANVIL_OK; i++)
        s = write_all(f, tmp, anvil_tensor_cdata(tensors[order[i]]),
                      anvil_tensor_nbytes(tensors[order[i]]));
    if (s == ANVIL_OK && (fflush(f) != 0 || fsync(fileno(f)) != 0))
        s = anvil_fail(ANVIL_ERR_IO, "cannot flush '%s' to disk: %s", tmp, strerror(errno));
    if (fclose(f) != 0 && s == ANVIL_OK)
        s = anvil_fail(ANVIL_ERR_IO, "cannot close '%s': %s", tmp, strerror(errno));
    return s;
}

/* After the rename: make the new directory entry durable too (best effort). */
static void sync_parent_dir(const char *path)
{
    char *dir = anvil_xstrdup(path);
    if (!dir)
        return;
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        slash[1] = '\0';
    else if (slash)
        *slash = '\0';
    int fd = open(slash ? dir : ".", O_RDONLY);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

anvil_status anvil_safetensors_write(const char *path, int count, const char *const *names,
                                     const anvil_tensor *const *tensors)
{
    ANVIL_TRY(check_write_args(path, count, names, tensors));
    int *order = anvil_xmalloc((size_t)count * sizeof *order + 1, "safetensors layout");
    uint64_t *begin = anvil_xmalloc((size_t)count * sizeof *begin + 1, "safetensors layout");
    size_t tlen = strlen(path) + 32;
    char *tmp = anvil_xmalloc(tlen, "a temporary path");
    strbuf hdr = {0};
    anvil_status s = order && begin && tmp ? ANVIL_OK : ANVIL_ERR_OOM;
    if (s == ANVIL_OK) {
        layout(count, tensors, order, begin);
        s = build_header(count, names, tensors, begin, &hdr);
    }
    if (s == ANVIL_OK) {
        /* write beside the target and rename over it: readers never see half a file */
        snprintf(tmp, tlen, "%s.tmp.%ld", path, (long)getpid());
        s = write_tmp(tmp, &hdr, count, tensors, order);
        if (s == ANVIL_OK && rename(tmp, path) != 0)
            s = anvil_fail(ANVIL_ERR_IO, "cannot rename '%s' to '%s': %s", tmp, path,
                           strerror(errno));
        if (s != ANVIL_OK)
            (void)unlink(tmp);
        else
            sync_parent_dir(path);
    }
    free(hdr.p);
    free(tmp);
    free(begin);
    free(order);
    return s;
}
