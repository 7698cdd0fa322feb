/* eval.h — batch adapters and a host-side evaluation for `anvil train`.
 *
 * anvil_evaluate() covers the common case (cross-entropy on class labels, samples shaped
 * exactly like the model input).  For the other losses (targets become one-hot float
 * vectors) and for models whose input has the same number of values as a sample but
 * another shape, the tool adapts each batch itself and evaluates through anvil_predict(),
 * computing the loss as PyTorch defines it (reduction="mean"). */
#ifndef ANVIL_TOOL_EVAL_H
#define ANVIL_TOOL_EVAL_H

#include "anvil.h"

typedef struct {
    int in_ndim;                       /* the model input, one sample */
    int64_t in_shape[ANVIL_MAX_DIMS];
    bool reshape;                      /* batches need reshaping to the model input */
    bool one_hot;                      /* the loss wants float one-hot targets */
    int64_t classes;                   /* width of the model output */
    anvil_loss_kind loss;
    float huber_delta;                 /* huber delta / smooth-L1 beta */
} tool_adapter;

/* x [B, sample...] -> *out = x viewed as [B, model input...] (a new tensor, or x retained). */
anvil_status tool_adapt_x(const tool_adapter *a, const anvil_tensor *x, anvil_tensor **out);
/* y int32 [B] -> *out = one-hot float32 [B, classes] (or y retained). */
anvil_status tool_adapt_y(const tool_adapter *a, const anvil_tensor *y, anvil_tensor **out);

/* Mean loss and accuracy over d in evaluation mode, through anvil_predict. */
anvil_status tool_evaluate(anvil_trainer *t, const anvil_dataset *d, int batch_size,
                           const tool_adapter *a, anvil_eval_result *out);

#endif
