/* eval.c — batch adapters and a host-side evaluation for `anvil train` (see eval.h). */
#include "eval.h"

#include <math.h>
#include <string.h>

anvil_status tool_adapt_x(const tool_adapter *a, const anvil_tensor *x, anvil_tensor **out)
{
    if (!a->reshape) {
        *out = anvil_tensor_retain((anvil_tensor *)x);
        return ANVIL_OK;
    }
    int64_t shape[ANVIL_MAX_DIMS + 1];
    shape[0] = anvil_tensor_shape(x)[0];
    memcpy(shape + 1, a->in_shape, (size_t)a->in_ndim * sizeof(int64_t));
    return anvil_tensor_create(out, anvil_tensor_dtype(x), a->in_ndim + 1, shape,
                               anvil_tensor_cdata(x));
}

anvil_status tool_adapt_y(const tool_adapter *a, const anvil_tensor *y, anvil_tensor **out)
{
    if (!a->one_hot) {
        *out = anvil_tensor_retain((anvil_tensor *)y);
        return ANVIL_OK;
    }
    int64_t b = anvil_tensor_numel(y);
    int64_t shape[2] = {b, a->classes};
    anvil_status st = anvil_tensor_create(out, ANVIL_F32, 2, shape, NULL);
    if (st != ANVIL_OK)
        return st;
    const int32_t *lab = anvil_tensor_cdata(y);
    float *dst = anvil_tensor_data(*out);
    for (int64_t i = 0; i < b; i++)
        if (lab[i] >= 0 && lab[i] < a->classes)
            dst[i * a->classes + lab[i]] = 1.0f;
    return ANVIL_OK;
}

/* The summed loss of one sample's outputs o[0..C) against label `lab` (PyTorch formulas;
 * elementwise losses are summed here and divided by C later, as reduction="mean" over
 * all elements). */
static double sample_loss(const tool_adapter *a, const float *o, int32_t lab)
{
    int64_t C = a->classes;
    double s = 0.0;
    if (a->loss == ANVIL_LOSS_CROSS_ENTROPY || a->loss == ANVIL_LOSS_CROSS_ENTROPY_PROBS) {
        double mx = -INFINITY;
        for (int64_t c = 0; c < C; c++)
            mx = fmax(mx, (double)o[c]);
        double se = 0.0;
        for (int64_t c = 0; c < C; c++)
            se += exp((double)o[c] - mx);
        return mx + log(se) - (double)o[lab];
    }
    double delta = a->huber_delta;
    for (int64_t c = 0; c < C; c++) {
        double t = c == lab ? 1.0 : 0.0, x = o[c], d = fabs(x - t);
        switch (a->loss) {
        case ANVIL_LOSS_MSE: s += d * d; break;
        case ANVIL_LOSS_L1: s += d; break;
        case ANVIL_LOSS_HUBER: s += d < delta ? 0.5 * d * d : delta * (d - 0.5 * delta); break;
        case ANVIL_LOSS_SMOOTH_L1:
            s += d < delta ? 0.5 * d * d / delta : d - 0.5 * delta;
            break;
        case ANVIL_LOSS_BCE: {
            double lp = fmax(log(x), -100.0), lq = fmax(log(1.0 - x), -100.0);
            s += -(t * lp + (1.0 - t) * lq);
            break;
        }
        case ANVIL_LOSS_BCE_WITH_LOGITS: s += fmax(x, 0.0) - x * t + log1p(exp(-fabs(x))); break;
        default: break;
        }
    }
    return s / (double)C;
}

anvil_status tool_evaluate(anvil_trainer *t, const anvil_dataset *d, int batch_size,
                           const tool_adapter *a, anvil_eval_result *out)
{
    memset(out, 0, sizeof *out);
    anvil_batcher *b = NULL;
    anvil_status st = anvil_batcher_create(&b, d, batch_size, false, 0);
    if (st != ANVIL_OK)
        return st;
    double loss_sum = 0.0;
    int64_t correct = 0, n = 0;
    for (;;) {
        anvil_tensor *x = NULL, *y = NULL, *xin = NULL, *o = NULL;
        bool done = false;
        st = anvil_batcher_next(b, &x, &y, &done);
        if (st != ANVIL_OK || done)
            break;
        st = tool_adapt_x(a, x, &xin);
        if (st == ANVIL_OK)
            st = anvil_predict(t, xin, &o);
        if (st == ANVIL_OK) {
            int64_t rows = anvil_tensor_numel(y);
            const int32_t *lab = anvil_tensor_cdata(y);
            const float *out_rows = anvil_tensor_cdata(o);
            for (int64_t i = 0; i < rows; i++) {
                const float *row = out_rows + i * a->classes;
                int64_t best = 0;
                for (int64_t c = 1; c < a->classes; c++)
                    if (row[c] > row[best])
                        best = c;
                correct += best == lab[i];
                loss_sum += sample_loss(a, row, lab[i]);
            }
            n += rows;
        }
        anvil_tensor_release(o);
        anvil_tensor_release(xin);
        anvil_tensor_release(x);
        anvil_tensor_release(y);
        if (st != ANVIL_OK)
            break;
    }
    anvil_batcher_free(b);
    if (st != ANVIL_OK)
        return st;
    out->samples = n;
    out->mean_loss = n > 0 ? loss_sum / (double)n : NAN;
    out->accuracy = n > 0 ? (double)correct / (double)n : 0.0;
    return ANVIL_OK;
}
