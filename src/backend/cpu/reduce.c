/* reduce.c — sum/mean over one dim or all, sum_to (the adjoint of broadcasting) and
 * broadcast_to (the adjoint of sum, or of mean when it divides).  Every sum runs in
 * double in a fixed order, so results do not depend on the thread count. */
#include "backend/cpu/cpu.h"

#define RED_TILE 256

/* out[o, i] = (sum over r of in[o, r, i]) / div, for in viewed as [outer, R, inner]. */
static void reduce_ori(const float *in, float *out, int64_t outer, int64_t R, int64_t inner,
                       double div)
{
    bool big = outer * R * inner >= CPU_PAR_MIN;
    if (inner == 1) {
        if (outer >= 64 || !big) {
            /* Many rows: one thread per row. */
#pragma omp parallel for if (big) schedule(static)
            for (int64_t o = 0; o < outer; o++)
                out[o] = (float)(cpu_sum_f32(in + o * R, R, false) / div);
        } else {
            /* Few long rows: split each row (same chunks, so the same result). */
            for (int64_t o = 0; o < outer; o++)
                out[o] = (float)(cpu_sum_f32(in + o * R, R, true) / div);
        }
        return;
    }
    /* Tiles of the inner dim, each summed down R in order: the reads stay contiguous. */
    int64_t nt = (inner + RED_TILE - 1) / RED_TILE;
#pragma omp parallel for if (big) schedule(static)
    for (int64_t item = 0; item < outer * nt; item++) {
        int64_t o = item / nt, i0 = (item % nt) * RED_TILE;
        int64_t w = cpu_min64(inner, i0 + RED_TILE) - i0;
        double acc[RED_TILE];
        for (int64_t i = 0; i < w; i++)
            acc[i] = 0.0;
        const float *p = in + o * R * inner + i0;
        for (int64_t r = 0; r < R; r++, p += inner)
            for (int64_t i = 0; i < w; i++)
                acc[i] += p[i];
        for (int64_t i = 0; i < w; i++)
            out[o * inner + i0 + i] = (float)(acc[i] / div);
    }
}

anvil_status anvil_cpu_reduce(const anvil_exec *ex, const anvil_step *s)
{
    (void)ex;
    const anvil_node *x = s->in_node[0];
    int dim = s->node->ia[0];
    bool mean = s->node->ia[2] != 0;
    int64_t n = cpu_numel(x);
    const float *in = (const float *)s->in[0];
    float *out = (float *)s->out;
    if (dim == ANVIL_ALL_DIMS || x->ndim == 0) {
        double sum = cpu_sum_f32(in, n, n >= CPU_PAR_MIN);
        out[0] = (float)(mean ? sum / (double)n : sum);
        return ANVIL_OK;
    }
    if (dim < 0)
        dim += x->ndim;
    if (dim < 0 || dim >= x->ndim)
        return anvil_fail(ANVIL_ERR_INVALID_ARG, "reduce: dim %d out of range for %d dims",
                          s->node->ia[0], x->ndim);
    int64_t R = x->shape[dim];
    reduce_ori(in, out, cpu_prod(x->shape, 0, dim), R, cpu_prod(x->shape, dim + 1, x->ndim),
               mean ? (double)R : 1.0);
    return ANVIL_OK;
}

/* sum_to: in[0] is the broadcast shape, the output the shape it was broadcast from. */
anvil_status anvil_cpu_sum_to(const anvil_exec *ex, const anvil_step *s)
{
    (void)ex;
    const anvil_node *x = s->in_node[0], *y = s->node;
    const float *in = (const float *)s->in[0];
    float *out = (float *)s->out;
    int64_t on = cpu_numel(y);
    if (on == 0)
        return ANVIL_OK;
    /* Group the input's dims (size-1 dims dropped) into runs of kept and reduced dims. */
    int ng = 0, nred = 0;
    int64_t gsz[ANVIL_MAX_DIMS];
    bool gred[ANVIL_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++) {
        if (x->shape[d] == 1)
            continue;
        int od = d - (x->ndim - y->ndim);
        bool red = od < 0 || y->shape[od] == 1;
        if (ng > 0 && gred[ng - 1] == red) {
            gsz[ng - 1] *= x->shape[d];
        } else {
            gsz[ng] = x->shape[d];
            gred[ng] = red;
            nred += red;
            ng++;
        }
    }
    if (nred == 0) {
        if (out != in)
            memcpy(out, in, (size_t)on * sizeof(float));
        return ANVIL_OK;
    }
    if (nred == 1) {
        int64_t outer = 1, R = 1, inner = 1;
        bool after = false;
        for (int g = 0; g < ng; g++) {
            if (gred[g]) {
                R = gsz[g];
                after = true;
            } else if (after) {
                inner *= gsz[g];
            } else {
                outer *= gsz[g];
            }
        }
        reduce_ori(in, out, outer, R, inner, 1.0);
        return ANVIL_OK;
    }
    if (ng == 3 && gred[0] && !gred[1] && gred[2]) {
        /* [N, C, S] -> [C] (a convolution's bias gradient): per channel, the N contiguous
         * runs of S values in order */
        int64_t N = gsz[0], C = gsz[1], S = gsz[2];
#pragma omp parallel for if (N * C * S >= CPU_PAR_MIN) schedule(static)
        for (int64_t c = 0; c < C; c++) {
            double acc = 0.0;
            for (int64_t n = 0; n < N; n++)
                acc += cpu_sum_f32(in + (n * C + c) * S, S, false);
            out[c] = (float)acc;
        }
        return ANVIL_OK;
    }
    /* Several reduced runs (e.g. [A,B,C] -> [1,B,1]): each output element walks its
     * reduced indices in order. */
    int64_t gst[ANVIL_MAX_DIMS], rtot = 1, st = 1;
    for (int g = ng - 1; g >= 0; g--) {
        gst[g] = st;
        st *= gsz[g];
        if (gred[g])
            rtot *= gsz[g];
    }
#pragma omp parallel for if (on * rtot >= CPU_PAR_MIN) schedule(static)
    for (int64_t o = 0; o < on; o++) {
        int64_t base = 0, rem = o;
        for (int g = ng - 1; g >= 0; g--) {
            if (!gred[g]) {
                base += (rem % gsz[g]) * gst[g];
                rem /= gsz[g];
            }
        }
        double acc = 0.0;
        for (int64_t r = 0; r < rtot; r++) {
            int64_t off = 0, rr = r;
            for (int g = ng - 1; g >= 0; g--) {
                if (gred[g]) {
                    off += (rr % gsz[g]) * gst[g];
                    rr /= gsz[g];
                }
            }
            acc += in[base + off];
        }
        out[o] = (float)acc;
    }
    return ANVIL_OK;
}

/* broadcast_to: in[0] repeated up to the output shape; with ia[0], each element divided
 * by the expansion factor (the gradient of a mean). */
anvil_status anvil_cpu_broadcast_to(const anvil_exec *ex, const anvil_step *s)
{
    (void)ex;
    int64_t on = cpu_numel(s->node), inn = cpu_numel(s->in_node[0]);
    if (on == 0)
        return ANVIL_OK;
    const float *in = (const float *)s->in[0];
    float *out = (float *)s->out;
    bool divide = s->node->ia[0] != 0;
    float f = divide ? (float)(on / (inn ? inn : 1)) : 1.0f;
    cpu_bcast it;
    const anvil_node *ins[1] = {s->in_node[0]};
    cpu_bcast_init(&it, s->node, 1, ins);
    int64_t inner = it.dim[it.nd - 1], rows = on / inner, sa = it.st[0][it.nd - 1];
    int64_t nblk = (inner + CPU_BCAST_BLOCK - 1) / CPU_BCAST_BLOCK;
#pragma omp parallel for if (on >= CPU_PAR_MIN) schedule(static)
    for (int64_t item = 0; item < rows * nblk; item++) {
        int64_t row = item / nblk, j0 = (item % nblk) * CPU_BCAST_BLOCK;
        int64_t j1 = cpu_min64(inner, j0 + CPU_BCAST_BLOCK), off[2];
        cpu_bcast_row(&it, row, off);
        const float *p = in + off[0];
        float *po = out + row * inner;
        if (divide) {
            for (int64_t j = j0; j < j1; j++)
                po[j] = p[j * sa] / f;
        } else {
            for (int64_t j = j0; j < j1; j++)
                po[j] = p[j * sa];
        }
    }
    return ANVIL_OK;
}
