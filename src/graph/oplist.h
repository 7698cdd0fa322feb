/* oplist.h — every graph op, once.  X(ENUM, name): the enum is OP_<ENUM>; the op's
 * definition (shape inference, VJP) is anvil_opdef_<name> in src/graph/ops/, and each
 * backend's kernel is anvil_<backend>_<name> in src/backend/<backend>/. */
#define ANVIL_OPLIST(X)                                                       \
    /* sources (no kernel) */                                                 \
    X(INPUT, input)                                                           \
    X(PARAM, param)                                                           \
    X(BUFFER, buffer)                                                         \
    /* views (no kernel: the output shares the input's storage) */            \
    X(RESHAPE, reshape)                                                       \
    /* data movement */                                                       \
    X(COPY, copy)                                                             \
    X(FILL, fill)                                                             \
    X(GATHER, gather)                                                         \
    X(CONCAT, concat)                                                         \
    X(SLICE, slice)                                                           \
    /* linear algebra (matmul.c) */                                           \
    X(MATMUL, matmul)                                                         \
    X(LINEAR, linear)                                                         \
    /* elementwise with broadcasting (elementwise.c) */                       \
    X(ADD, add)                                                               \
    X(SUB, sub)                                                               \
    X(MUL, mul)                                                               \
    X(DIV, div)                                                               \
    X(SCALE, scale)                                                           \
    /* reductions and their adjoints (reduce.c) */                            \
    X(REDUCE, reduce)                                                         \
    X(SUM_TO, sum_to)                                                         \
    X(BROADCAST_TO, broadcast_to)                                             \
    /* activations (activation.c) */                                         \
    X(ACT, act)                                                               \
    X(ACT_BWD, act_bwd)                                                       \
    /* softmax family (softmax.c) */                                          \
    X(SOFTMAX, softmax)                                                       \
    X(SOFTMAX_BWD, softmax_bwd)                                               \
    X(LOG_SOFTMAX, log_softmax)                                               \
    X(LOG_SOFTMAX_BWD, log_softmax_bwd)                                       \
    /* dropout (dropout.c) */                                                 \
    X(DROPOUT, dropout)                                                       \
    X(DROPOUT_BWD, dropout_bwd)                                               \
    /* convolution (conv.c) */                                                \
    X(CONV2D, conv2d)                                                         \
    X(CONV2D_BWD_DATA, conv2d_bwd_data)                                       \
    X(CONV2D_BWD_FILTER, conv2d_bwd_filter)                                   \
    /* pooling (pool.c) */                                                    \
    X(MAXPOOL2D, maxpool2d)                                                   \
    X(MAXPOOL2D_BWD, maxpool2d_bwd)                                           \
    X(AVGPOOL2D, avgpool2d)                                                   \
    X(AVGPOOL2D_BWD, avgpool2d_bwd)                                           \
    X(ADAPTIVE_AVGPOOL2D, adaptive_avgpool2d)                                 \
    X(ADAPTIVE_AVGPOOL2D_BWD, adaptive_avgpool2d_bwd)                         \
    /* losses (loss.c) */                                                     \
    X(CROSS_ENTROPY, cross_entropy)                                           \
    X(CROSS_ENTROPY_BWD, cross_entropy_bwd)                                   \
    X(PW_LOSS, pw_loss)                                                       \
    X(PW_LOSS_BWD, pw_loss_bwd)                                               \
    /* normalization (norm.c) */                                              \
    X(BATCHNORM_MOMENTS, batchnorm_moments)                                   \
    X(BATCHNORM, batchnorm)                                                   \
    X(BATCHNORM_STATS, batchnorm_stats)                                       \
    X(BATCHNORM_BWD_COEF, batchnorm_bwd_coef)                                 \
    X(BATCHNORM_BWD, batchnorm_bwd)                                           \
    X(BATCHNORM_BWD_AFFINE, batchnorm_bwd_affine)                             \
    X(LAYERNORM, layernorm)                                                   \
    X(LAYERNORM_BWD, layernorm_bwd)                                           \
    X(LAYERNORM_BWD_AFFINE, layernorm_bwd_affine)                             \
    /* optimizer updates and step bookkeeping (optim.c) */                    \
    X(SGD, sgd)                                                               \
    X(ADAM, adam)                                                             \
    X(RMSPROP, rmsprop)                                                       \
    X(ADAGRAD, adagrad)                                                       \
    X(ADADELTA, adadelta)                                                     \
    X(NADAM, nadam)                                                           \
    X(CLIP_NORM, clip_norm)                                                   \
    X(STEP_END, step_end)                                                     \
    /* metrics accumulated on the device (metrics.c) */                       \
    X(ACCUM_LOSS, accum_loss)                                                 \
    X(ACCUM_EVAL, accum_eval)
