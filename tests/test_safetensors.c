/* test_safetensors.c — the safetensors reader and writer: round trips, every kind of
 * corrupt file, and interchange with Python's safetensors + PyTorch (run only where
 * `python3 -c "import torch, safetensors"` works; skipped otherwise). */
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

static char tmpdir[] = "/tmp/anvil_test_st_XXXXXX";

static int setup(void **state)
{
    (void)state;
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    DIR *d = opendir(tmpdir);
    if (d) {
        struct dirent *e;
        char p[1024];
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
                unlink(p);
            }
        closedir(d);
    }
    rmdir(tmpdir);
    return 0;
}

static const char *tpath(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/%s", tmpdir, name);
    return buf;
}

static void assert_error_mentions(const char *a, const char *b)
{
    const char *msg = anvil_last_error();
    if (a && !strstr(msg, a))
        fail_msg("error message \"%s\" does not mention \"%s\"", msg, a);
    if (b && !strstr(msg, b))
        fail_msg("error message \"%s\" does not mention \"%s\"", msg, b);
}

static anvil_tensor *make(anvil_dtype dt, int ndim, const int64_t *shape, unsigned salt)
{
    anvil_tensor *t = NULL;
    assert_int_equal(anvil_tensor_create(&t, dt, ndim, shape, NULL), ANVIL_OK);
    uint8_t *p = anvil_tensor_data(t);
    for (size_t i = 0; i < anvil_tensor_nbytes(t); i++)
        p[i] = (uint8_t)(i * 31 + salt * 7 + 1);
    return t;
}

static void assert_same_tensor(const anvil_tensor *a, const anvil_tensor *b)
{
    assert_int_equal(anvil_tensor_dtype(a), anvil_tensor_dtype(b));
    assert_int_equal(anvil_tensor_ndim(a), anvil_tensor_ndim(b));
    for (int i = 0; i < anvil_tensor_ndim(a); i++)
        assert_int_equal(anvil_tensor_shape(a)[i], anvil_tensor_shape(b)[i]);
    assert_int_equal(anvil_tensor_nbytes(a), anvil_tensor_nbytes(b));
    if (anvil_tensor_nbytes(a))
        assert_memory_equal(anvil_tensor_cdata(a), anvil_tensor_cdata(b), anvil_tensor_nbytes(a));
}

/* A file from a header text and a data buffer; hlen_override != 0 lies about the length. */
static void write_raw(const char *path, const char *header, const void *data, size_t dlen,
                      uint64_t hlen_override)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    uint64_t n = hlen_override ? hlen_override : strlen(header);
    uint8_t len[8];
    for (int i = 0; i < 8; i++)
        len[i] = (uint8_t)(n >> (8 * i));
    fwrite(len, 1, 8, f);
    fwrite(header, 1, strlen(header), f);
    if (dlen)
        fwrite(data, 1, dlen, f);
    fclose(f);
}

/* Reads a file expected to fail with `want`, the message naming the path and `what`. */
static void expect_bad(const char *path, anvil_status want, const char *what)
{
    int count = -1;
    char **names = (char **)1;
    anvil_tensor **tensors = (anvil_tensor **)1;
    anvil_status s = anvil_safetensors_read(path, &count, &names, &tensors);
    if (s != want)
        fail_msg("%s: got status %d (%s), wanted %d", path, (int)s, anvil_last_error(), (int)want);
    assert_int_equal(count, 0);
    assert_null(names);
    assert_null(tensors);
    assert_error_mentions(path, what);
}

/* ---------------------------------------------------------------- round trip */

static void test_round_trip(void **state)
{
    (void)state;
    int64_t s23[2] = {2, 3}, s4[1] = {4}, s5[1] = {5}, s22[2] = {2, 2}, s3[1] = {3},
            s03[2] = {0, 3}, s1234[4] = {1, 2, 3, 4};
    anvil_tensor *t[8] = {
        make(ANVIL_U8, 1, s5, 1),        make(ANVIL_F32, 2, s23, 2),
        make(ANVIL_I32, 1, s4, 3),       make(ANVIL_BF16, 2, s22, 4),
        make(ANVIL_I64, 1, s3, 5),       make(ANVIL_F32, 0, NULL, 6),  /* a scalar */
        make(ANVIL_F32, 2, s03, 7),      make(ANVIL_F32, 4, s1234, 8), /* empty, 4-D */
    };
    const char *names[8] = {"0.weight", "layer \"quoted\"\\name", "c", "d.bias",
                            "e", "scalar", "empty", "fc1.weight"};
    char p[512];
    tpath(p, sizeof p, "rt.safetensors");
    assert_int_equal(anvil_safetensors_write(p, 8, names, (const anvil_tensor *const *)t), ANVIL_OK);

    /* the header length is a multiple of 8 and the header is a JSON object */
    FILE *f = fopen(p, "rb");
    assert_non_null(f);
    uint8_t len[8];
    assert_int_equal(fread(len, 1, 8, f), 8);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | len[i];
    assert_int_equal(n % 8, 0);
    assert_int_equal(fgetc(f), '{');
    fclose(f);

    int count;
    char **rn;
    anvil_tensor **rt;
    assert_int_equal(anvil_safetensors_read(p, &count, &rn, &rt), ANVIL_OK);
    assert_int_equal(count, 8);
    for (int i = 0; i < 8; i++) {
        assert_string_equal(rn[i], names[i]);
        assert_same_tensor(rt[i], t[i]);
    }
    anvil_safetensors_free(count, rn, rt);

    /* no temporary file is left behind */
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    while ((e = readdir(d)))
        assert_null(strstr(e->d_name, ".tmp."));
    closedir(d);

    /* overwriting an existing file, and an empty file */
    assert_int_equal(anvil_safetensors_write(p, 2, names, (const anvil_tensor *const *)t), ANVIL_OK);
    assert_int_equal(anvil_safetensors_read(p, &count, &rn, &rt), ANVIL_OK);
    assert_int_equal(count, 2);
    anvil_safetensors_free(count, rn, rt);
    assert_int_equal(anvil_safetensors_write(p, 0, NULL, NULL), ANVIL_OK);
    assert_int_equal(anvil_safetensors_read(p, &count, &rn, &rt), ANVIL_OK);
    assert_int_equal(count, 0);
    anvil_safetensors_free(count, rn, rt);
    for (int i = 0; i < 8; i++)
        anvil_tensor_release(t[i]);
}

static void test_write_errors(void **state)
{
    (void)state;
    int64_t s2[1] = {2};
    anvil_tensor *t = make(ANVIL_F32, 1, s2, 1);
    const anvil_tensor *ts[2] = {t, t};
    const char *dup[2] = {"w", "w"};
    char p[512];
    tpath(p, sizeof p, "bad-write.safetensors");
    assert_int_equal(anvil_safetensors_write(p, 2, dup, ts), ANVIL_ERR_INVALID_ARG);
    assert_error_mentions("'w'", NULL);
    const char *meta[1] = {"__metadata__"};
    assert_int_equal(anvil_safetensors_write(p, 1, meta, ts), ANVIL_ERR_INVALID_ARG);
    const anvil_tensor *nul[1] = {NULL};
    assert_int_equal(anvil_safetensors_write(p, 1, dup, nul), ANVIL_ERR_INVALID_ARG);
    assert_int_equal(access(p, F_OK), -1);
    /* a folder that does not exist */
    char q[600];
    snprintf(q, sizeof q, "%s/no-such-dir/x.safetensors", tmpdir);
    assert_int_equal(anvil_safetensors_write(q, 1, dup, ts), ANVIL_ERR_IO);
    assert_error_mentions("no-such-dir", NULL);
    anvil_tensor_release(t);
}

/* ---------------------------------------------------------------- corrupt files */

static void test_truncated_header(void **state)
{
    (void)state;
    char p[512];
    tpath(p, sizeof p, "short.safetensors");
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    fwrite("\x10\0\0", 1, 3, f);
    fclose(f);
    expect_bad(p, ANVIL_ERR_FORMAT, "truncated");
    f = fopen(p, "wb");
    fclose(f);
    expect_bad(p, ANVIL_ERR_FORMAT, "truncated");
}

static void test_header_length_beyond_file(void **state)
{
    (void)state;
    char p[512];
    tpath(p, sizeof p, "longhdr.safetensors");
    write_raw(p, "{}      ", NULL, 0, 1000);
    expect_bad(p, ANVIL_ERR_FORMAT, "1000");
    write_raw(p, "{}      ", NULL, 0, UINT64_MAX);
    expect_bad(p, ANVIL_ERR_FORMAT, "header length");
}

static void test_bad_json(void **state)
{
    (void)state;
    char p[512];
    tpath(p, sizeof p, "badjson.safetensors");
    write_raw(p, "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], ", NULL, 0, 0);
    expect_bad(p, ANVIL_ERR_FORMAT, "malformed JSON");
    write_raw(p, "[1, 2, 3]", NULL, 0, 0);
    expect_bad(p, ANVIL_ERR_FORMAT, "not a JSON object");
    write_raw(p, "{} xyz  ", NULL, 0, 0);
    expect_bad(p, ANVIL_ERR_FORMAT, "xyz");
    write_raw(p, "{\"a\": 5}", NULL, 0, 0);
    expect_bad(p, ANVIL_ERR_FORMAT, "'a'");
    write_raw(p, "{\"__metadata__\": {\"format\": 1}}", NULL, 0, 0);
    expect_bad(p, ANVIL_ERR_FORMAT, "format");
    /* a duplicated name */
    float data[2] = {1, 2};
    write_raw(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                 "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", data, 8, 0);
    expect_bad(p, ANVIL_ERR_FORMAT, "'w'");
    /* metadata and padding are fine */
    write_raw(p, "{\"__metadata__\":{\"format\":\"pt\"},\"w\":{\"dtype\":\"F32\",\"shape\":[2],"
                 "\"data_offsets\":[0,8]}}   \n  ", data, 8, 0);
    int count;
    char **names;
    anvil_tensor **t;
    assert_int_equal(anvil_safetensors_read(p, &count, &names, &t), ANVIL_OK);
    assert_int_equal(count, 1);
    assert_string_equal(names[0], "w");
    assert_memory_equal(anvil_tensor_cdata(t[0]), data, 8);
    anvil_safetensors_free(count, names, t);
}

static void test_unknown_dtype(void **state)
{
    (void)state;
    char p[512];
    tpath(p, sizeof p, "dtype.safetensors");
    uint8_t data[8] = {0};
    write_raw(p, "{\"layer.w\":{\"dtype\":\"F99\",\"shape\":[2],\"data_offsets\":[0,8]}}", data, 8, 0);
    expect_bad(p, ANVIL_ERR_FORMAT, "layer.w");
    assert_error_mentions("F99", NULL);
    /* a real safetensors dtype Anvil does not have */
    write_raw(p, "{\"layer.w\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[0,8]}}", data, 8, 0);
    expect_bad(p, ANVIL_ERR_UNSUPPORTED, "layer.w");
    assert_error_mentions("F16", NULL);
    write_raw(p, "{\"layer.w\":{\"shape\":[4],\"data_offsets\":[0,8]}}", data, 8, 0);
    expect_bad(p, ANVIL_ERR_FORMAT, "layer.w");
}

static void test_offsets_out_of_range(void **state)
{
    (void)state;
    char p[512];
    tpath(p, sizeof p, "range.safetensors");
    uint8_t data[16] = {0};
    write_raw(p, "{\"fc.b\":{\"dtype\":\"F32\",\"shape\":[25],\"data_offsets\":[0,100]}}", data, 16, 0);
    expect_bad(p, ANVIL_ERR_FORMAT, "fc.b");
    assert_error_mentions("16-byte", NULL);
    write_raw(p, "{\"fc.b\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", data, 16, 0);
    expect_bad(p, ANVIL_ERR_FORMAT, "fc.b");
    write_raw(p, "{\"fc.b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", data, 16, 0);
    expect_bad(p, ANVIL_ERR_FORMAT, "fc.b");
    write_raw(p, "{\"fc.b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", data, 16, 0);
    expect_bad(p, ANVIL_ERR_FORMAT, "fc.b");
    /* overlapping tensors */
    write_raw(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", data, 16, 0);
    expect_bad(p, ANVIL_ERR_FORMAT, "overlap");
}

static void test_size_mismatch(void **state)
{
    (void)state;
    char p[512];
    tpath(p, sizeof p, "size.safetensors");
    uint8_t data[64] = {0};
    write_raw(p, "{\"fc1.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,16]}}",
              data, 64, 0);
    expect_bad(p, ANVIL_ERR_FORMAT, "fc1.weight");
    assert_error_mentions("[2, 3]", "24");
    write_raw(p, "{\"x\":{\"dtype\":\"I64\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,16]}}",
              data, 64, 0);
    expect_bad(p, ANVIL_ERR_FORMAT, "'x'");
    write_raw(p, "{\"x\":{\"dtype\":\"U8\",\"shape\":[2.5],\"data_offsets\":[0,2]}}", data, 64, 0);
    expect_bad(p, ANVIL_ERR_FORMAT, "shape");
    write_raw(p, "{\"x\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}",
              data, 64, 0);
    expect_bad(p, ANVIL_ERR_UNSUPPORTED, "'x'");
}

static void test_missing_file(void **state)
{
    (void)state;
    char p[512];
    tpath(p, sizeof p, "missing.safetensors");
    expect_bad(p, ANVIL_ERR_IO, NULL);
    expect_bad(tmpdir, ANVIL_ERR_IO, NULL); /* a folder */
}

/* ---------------------------------------------------------------- Python interop */

static const char *py_script =
    "import sys, torch\n"
    "from safetensors.torch import load_file, save_file\n"
    "d = sys.argv[1]\n"
    "t = load_file(d + '/from_c.safetensors')\n"
    "assert sorted(t) == ['a.weight', 'b', 'c', 'd', 'e'], sorted(t)\n"
    "assert t['a.weight'].dtype == torch.float32 and list(t['a.weight'].shape) == [2, 3]\n"
    "assert torch.equal(t['a.weight'], torch.arange(6, dtype=torch.float32).reshape(2, 3) / 4)\n"
    "assert torch.equal(t['b'], torch.tensor([-3, 7, 100000], dtype=torch.int32))\n"
    "assert torch.equal(t['c'], torch.tensor([0, 255, 9], dtype=torch.uint8))\n"
    "assert torch.equal(t['d'], torch.tensor([1.5, -2.0], dtype=torch.bfloat16))\n"
    "assert torch.equal(t['e'], torch.tensor([[-1, 1 << 40]], dtype=torch.int64))\n"
    "lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))\n"
    "with torch.no_grad():\n"
    "    lin[1].weight.copy_(torch.arange(12, dtype=torch.float32).reshape(3, 4) - 5.5)\n"
    "    lin[1].bias.copy_(torch.tensor([0.25, -0.5, 8.0]))\n"
    "sd = dict(lin.state_dict())\n"
    "sd['half'] = torch.tensor([0.5, 3.0], dtype=torch.bfloat16)\n"
    "sd['steps'] = torch.tensor(7, dtype=torch.int64)\n"
    "sd['bytes'] = torch.arange(5, dtype=torch.uint8)\n"
    "save_file(sd, d + '/from_py.safetensors', metadata={'format': 'pt'})\n";

static bool python_ok(void)
{
    return system("python3 -c 'import torch, safetensors' >/dev/null 2>&1") == 0;
}

static void test_python_interop(void **state)
{
    (void)state;
    if (!python_ok()) {
        print_message("python3 with torch and safetensors is not available: skipped\n");
        skip();
    }
    char p[512], script[512], cmd[1400];
    /* C -> Python */
    int64_t s23[2] = {2, 3}, s3[1] = {3}, s2[1] = {2}, s12[2] = {1, 2};
    float a[6] = {0, 0.25f, 0.5f, 0.75f, 1, 1.25f};
    int32_t b[3] = {-3, 7, 100000};
    uint8_t c[3] = {0, 255, 9};
    uint16_t dd[2] = {0x3FC0, 0xC000}; /* bf16 1.5, -2.0 */
    int64_t e[2] = {-1, (int64_t)1 << 40};
    anvil_tensor *t[5];
    assert_int_equal(anvil_tensor_create(&t[0], ANVIL_F32, 2, s23, a), ANVIL_OK);
    assert_int_equal(anvil_tensor_create(&t[1], ANVIL_I32, 1, s3, b), ANVIL_OK);
    assert_int_equal(anvil_tensor_create(&t[2], ANVIL_U8, 1, s3, c), ANVIL_OK);
    assert_int_equal(anvil_tensor_create(&t[3], ANVIL_BF16, 1, s2, dd), ANVIL_OK);
    assert_int_equal(anvil_tensor_create(&t[4], ANVIL_I64, 2, s12, e), ANVIL_OK);
    const char *names[5] = {"a.weight", "b", "c", "d", "e"};
    assert_int_equal(anvil_safetensors_write(tpath(p, sizeof p, "from_c.safetensors"), 5, names,
                                             (const anvil_tensor *const *)t), ANVIL_OK);
    for (int i = 0; i < 5; i++)
        anvil_tensor_release(t[i]);
    FILE *f = fopen(tpath(script, sizeof script, "interop.py"), "w");
    assert_non_null(f);
    fputs(py_script, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "python3 '%s' '%s'", script, tmpdir);
    assert_int_equal(system(cmd), 0);

    /* Python -> C */
    int count;
    char **rn;
    anvil_tensor **rt;
    assert_int_equal(anvil_safetensors_read(tpath(p, sizeof p, "from_py.safetensors"), &count,
                                            &rn, &rt), ANVIL_OK);
    assert_int_equal(count, 5);
    int found = 0;
    for (int i = 0; i < count; i++) {
        const anvil_tensor *x = rt[i];
        if (!strcmp(rn[i], "1.weight")) {
            assert_int_equal(anvil_tensor_dtype(x), ANVIL_F32);
            assert_int_equal(anvil_tensor_ndim(x), 2);
            assert_int_equal(anvil_tensor_shape(x)[0], 3);
            assert_int_equal(anvil_tensor_shape(x)[1], 4);
            const float *w = anvil_tensor_cdata(x);
            for (int k = 0; k < 12; k++)
                assert_true(w[k] == (float)k - 5.5f);
            found++;
        } else if (!strcmp(rn[i], "1.bias")) {
            const float *bb = anvil_tensor_cdata(x);
            assert_true(bb[0] == 0.25f && bb[1] == -0.5f && bb[2] == 8.0f);
            found++;
        } else if (!strcmp(rn[i], "half")) {
            assert_int_equal(anvil_tensor_dtype(x), ANVIL_BF16);
            const uint16_t *h = anvil_tensor_cdata(x);
            assert_int_equal(h[0], 0x3F00);
            assert_int_equal(h[1], 0x4040);
            found++;
        } else if (!strcmp(rn[i], "steps")) {
            assert_int_equal(anvil_tensor_dtype(x), ANVIL_I64);
            assert_int_equal(anvil_tensor_ndim(x), 0);
            assert_int_equal(*(const int64_t *)anvil_tensor_cdata(x), 7);
            found++;
        } else if (!strcmp(rn[i], "bytes")) {
            assert_int_equal(anvil_tensor_dtype(x), ANVIL_U8);
            const uint8_t *u = anvil_tensor_cdata(x);
            for (int k = 0; k < 5; k++)
                assert_int_equal(u[k], k);
            found++;
        }
    }
    assert_int_equal(found, 5);
    anvil_safetensors_free(count, rn, rt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_write_errors),
        cmocka_unit_test(test_truncated_header),
        cmocka_unit_test(test_header_length_beyond_file),
        cmocka_unit_test(test_bad_json),
        cmocka_unit_test(test_unknown_dtype),
        cmocka_unit_test(test_offsets_out_of_range),
        cmocka_unit_test(test_size_mismatch),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_python_interop),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
