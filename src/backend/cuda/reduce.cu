/* reduce.cu — sum/mean over one dim or all, sum_to (the adjoint of broadcasting) and
 * broadcast_to (the adjoint of sum, or of mean when it divides).  Deterministic: every
 * sum has a fixed shape of work for a given input shape (block trees, a fixed grid and
 * a second pass for long single sums), never atomics.  Sums accumulate in double, as
 * the CPU kernels' do, so the two backends agree to about the last float bit. */
#include "backend/cuda/cuda_internal.h"

/* out[o] = sum_r in[o, r] / div: one block per row (grid-stride over rows). */
static __global__ void reduce_rows(const float *__restrict__ in, float *out, int64_t outer,
                                   int64_t R, double div)
{
    __shared__ double sh[32];
    for (int64_t o = blockIdx.x; o < outer; o += gridDim.x) {
        const float *p = in + o * R;
        double acc = 0.0;
        for (int64_t r = threadIdx.x; r < R; r += blockDim.x)
            acc += p[r];
        acc = anvil_cuda_block_sum(acc, sh);
        if (threadIdx.x == 0)
            out[o] = (float)(acc / div);
    }
}

/* out[o, i] = sum_r in[o, r, i] / div for inner > 1: a block of 32 x 8 threads takes 32
 * consecutive i of one o; its 8 rows of threads split r, then add up in a fixed order. */
#define COLS_X 32
#define COLS_Y 8
static __global__ void reduce_cols(const float *__restrict__ in, float *out, int64_t outer,
                                   int64_t R, int64_t inner, double div)
{
    __shared__ double sh[COLS_Y][COLS_X + 1];
    int64_t tiles = (inner + COLS_X - 1) / COLS_X;
    for (int64_t t = blockIdx.x; t < outer * tiles; t += gridDim.x) {
        int64_t o = t / tiles, i = (t % tiles) * COLS_X + threadIdx.x;
        double acc = 0.0;
        if (i < inner) {
            const float *p = in + o * R * inner + i;
            for (int64_t r = threadIdx.y; r < R; r += COLS_Y)
                acc += p[r * inner];
        }
        __syncthreads();
        sh[threadIdx.y][threadIdx.x] = acc;
        __syncthreads();
        if (threadIdx.y == 0 && i < inner) {
            double sum = sh[0][threadIdx.x];
            for (int y = 1; y < COLS_Y; y++)
                sum += sh[y][threadIdx.x];
            out[o * inner + i] = (float)(sum / div);
        }
    }
}

/* Pass 1 of a long single sum: partials[block] = the sum of its contiguous range. */
static __global__ void sum_partials(const float *__restrict__ in, int64_t n, double *partials)
{
    double v = anvil_cuda_split_partial<double>(n, [=](int64_t i) { return in[i]; });
    if (threadIdx.x == 0)
        partials[blockIdx.x] = v;
}

static unsigned int row_threads(int64_t R)
{
    unsigned int t = 32;
    while (t < 256 && (int64_t)t < R)
        t <<= 1;
    return t;
}

/* out = in viewed as [outer, R, inner] summed over R, divided by div. */
static anvil_status reduce_ori(anvil_cuda_ctx *c, const float *in, float *out, int64_t outer,
                               int64_t R, int64_t inner, double div, const char *name)
{
    if (outer * inner == 0)
        return ANVIL_OK;
    if (inner == 1) {
        if (outer == 1 && R > 32768) {
            unsigned int nb = anvil_cuda_split_blocks(R);
            double *partials = (double *)c->scratch;
            sum_partials<<<nb, ANVIL_CUDA_SPLIT_THREADS, 0, c->stream>>>(in, R, partials);
            ANVIL_TRY(anvil_cuda_launched(c, name));
            anvil_cuda_finish_sum<double, float><<<1, 1024, 0, c->stream>>>(partials, (int)nb, div, out);
            return anvil_cuda_launched(c, name);
        }
        unsigned int nb = (unsigned int)(outer < 65535 * 4 ? outer : 65535 * 4);
        reduce_rows<<<nb, row_threads(R), 0, c->stream>>>(in, out, outer, R, div);
        return anvil_cuda_launched(c, name);
    }
    int64_t tiles = outer * ((inner + COLS_X - 1) / COLS_X);
    unsigned int nb = (unsigned int)(tiles < 65535 * 4 ? tiles : 65535 * 4);
    reduce_cols<<<nb, dim3(COLS_X, COLS_Y), 0, c->stream>>>(in, out, outer, R, inner, div);
    return anvil_cuda_launched(c, name);
}

static int64_t prod(const int64_t *shape, int lo, int hi)
{
    int64_t k = 1;
    for (int d = lo; d < hi; d++)
        k *= shape[d];
    return k;
}

ANVIL_CUDA_KERNEL(reduce)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    const anvil_node *x = s->in_node[0];
    int dim = s->node->ia[0];
    bool mean = s->node->ia[2] != 0;
    int64_t n = anvil_node_numel(x);
    const float *in = (const float *)s->in[0];
    float *out = (float *)s->out;
    if (dim == ANVIL_ALL_DIMS || x->ndim == 0)
        return reduce_ori(c, in, out, 1, n, 1, mean ? (double)n : 1.0, "reduce");
    if (dim < 0)
        dim += x->ndim;
    if (dim < 0 || dim >= x->ndim)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "reduce: dim %d out of range for %d dims",
                          s->node->ia[0], x->ndim);
    int64_t R = x->shape[dim];
    return reduce_ori(c, in, out, prod(x->shape, 0, dim), R, prod(x->shape, dim + 1, x->ndim),
                      mean ? (double)R : 1.0, "reduce");
}

/* sum_to with several separate reduced runs of dims: each output element walks its
 * reduced indices in order (groups of dims merged; gst = element strides). */
typedef struct {
    int ng;
    int64_t gsz[ANVIL_MAX_DIMS], gst[ANVIL_MAX_DIMS];
    int gred[ANVIL_MAX_DIMS];
    int64_t rtot;
} sum_to_plan;

/* One block per output element: its threads stride over the reduced indices and the
 * block adds them in a fixed tree (deterministic).  The reduced runs can be long (a conv
 * bias gradient sums N*H*W values per channel), so the parallelism is over them. */
static __global__ void sum_to_general(const float *__restrict__ in, float *out, int64_t on,
                                      sum_to_plan p)
{
    __shared__ double sh[32];
    for (int64_t o = blockIdx.x; o < on; o += gridDim.x) {
        int64_t base = 0, rem = o;
        for (int g = p.ng - 1; g >= 0; g--) {
            if (!p.gred[g]) {
                base += (rem % p.gsz[g]) * p.gst[g];
                rem /= p.gsz[g];
            }
        }
        double acc = 0.0;
        for (int64_t r = threadIdx.x; r < p.rtot; r += blockDim.x) {
            int64_t off = 0, rr = r;
            for (int g = p.ng - 1; g >= 0; g--) {
                if (p.gred[g]) {
                    off += (rr % p.gsz[g]) * p.gst[g];
                    rr /= p.gsz[g];
                }
            }
            acc += in[base + off];
        }
        acc = anvil_cuda_block_sum(acc, sh);
        if (threadIdx.x == 0)
            out[o] = (float)acc;
    }
}

static __global__ void chan_sum_out(const double *sums, int64_t C, float *out)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < C; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = (float)sums[i * 4 + 2];
}

ANVIL_CUDA_KERNEL(sum_to)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    const anvil_node *x = s->in_node[0], *y = s->node;
    const float *in = (const float *)s->in[0];
    float *out = (float *)s->out;
    int64_t on = anvil_node_numel(y);
    if (on == 0)
        return ANVIL_OK;
    /* Group the input's dims (size-1 dims dropped) into runs of kept and reduced dims. */
    sum_to_plan p;
    memset(&p, 0, sizeof p);
    int nred = 0;
    for (int d = 0; d < x->ndim; d++) {
        if (x->shape[d] == 1)
            continue;
        int od = d - (x->ndim - y->ndim);
        int red = od < 0 || y->shape[od] == 1;
        if (p.ng > 0 && p.gred[p.ng - 1] == red) {
            p.gsz[p.ng - 1] *= x->shape[d];
        } else {
            p.gsz[p.ng] = x->shape[d];
            p.gred[p.ng] = red;
            nred += red;
            p.ng++;
        }
    }
    if (nred == 0) {
        if (out != in)
            ANVIL_CUDA_CHECK(cudaMemcpyAsync(out, in, (size_t)on * sizeof(float),
                                             cudaMemcpyDeviceToDevice, c->stream),
                             "sum_to: cudaMemcpyAsync (device to device)");
        return ANVIL_OK;
    }
    if (nred == 1) {
        int64_t outer = 1, R = 1, inner = 1;
        bool after = false;
        for (int g = 0; g < p.ng; g++) {
            if (p.gred[g]) {
                R = p.gsz[g];
                after = true;
            } else if (after) {
                inner *= p.gsz[g];
            } else {
                outer *= p.gsz[g];
            }
        }
        return reduce_ori(c, in, out, outer, R, inner, 1.0, "sum_to");
    }
    if (p.ng == 3 && p.gred[0] && !p.gred[1] && p.gred[2] && p.gsz[1] <= 4096) {
        /* [N, C, S] -> [C], a convolution's bias gradient: the parallel channel sums */
        double *sums;
        ANVIL_TRY(anvil_cuda_chan_sums(c, NULL, in, p.gsz[0], p.gsz[1], p.gsz[2], ANVIL_CHAN_DY, "sum_to", &sums));
        chan_sum_out<<<anvil_cuda_blocks(on, ANVIL_CUDA_THREADS), ANVIL_CUDA_THREADS, 0, c->stream>>>(sums, on, out);
        return anvil_cuda_launched(c, "sum_to");
    }
    int64_t st = 1;
    p.rtot = 1;
    for (int g = p.ng - 1; g >= 0; g--) {
        p.gst[g] = st;
        st *= p.gsz[g];
        if (p.gred[g])
            p.rtot *= p.gsz[g];
    }
    sum_to_general<<<(unsigned int)(on < 65535 * 8 ? on : 65535 * 8), ANVIL_CUDA_THREADS, 0, c->stream>>>(
        in, out, on, p);
    return anvil_cuda_launched(c, "sum_to");
}

static __global__ void broadcast_kernel(const float *__restrict__ in, float *out, int64_t n,
                                        anvil_cuda_bcast bc, float f, int divide)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t oa, ob;
        anvil_cuda_bcast_offsets(bc, i, &oa, &ob);
        out[i] = divide ? in[oa] / f : in[oa];
    }
}

ANVIL_CUDA_KERNEL(broadcast_to)
{
    anvil_cuda_ctx *c = anvil_cuda_ctx_of(ex);
    const anvil_node *x = s->in_node[0], *y = s->node;
    int64_t on = anvil_node_numel(y), inn = anvil_node_numel(x);
    if (on == 0)
        return ANVIL_OK;
    int divide = s->node->ia[0] != 0;
    float f = divide ? (float)(on / (inn ? inn : 1)) : 1.0f;
    anvil_cuda_bcast bc;
    memset(&bc, 0, sizeof bc);
    bc.ndim = y->ndim;
    for (int d = 0; d < y->ndim; d++)
        bc.shape[d] = y->shape[d];
    anvil_cuda_bcast_strides(x->ndim, x->shape, y->ndim, y->shape, bc.sa);
    broadcast_kernel<<<anvil_cuda_blocks(on, ANVIL_CUDA_THREADS), ANVIL_CUDA_THREADS, 0, c->stream>>>(
        (const float *)s->in[0], (float *)s->out, on, bc, f, divide);
    return anvil_cuda_launched(c, "broadcast_to");
}
