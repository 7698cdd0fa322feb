/* anvil.h — the public C API of Anvil.
 *
 * Anvil trains and runs neural networks with everything resident on one device
 * (the CPU backend or a CUDA GPU).  The flow is:
 *
 *   graph / model  ->  trainer (compiles programs per batch size)  ->  anvil_train_step()
 *
 * Conventions
 *  - Every fallible call returns anvil_status; ANVIL_OK is 0.  On failure,
 *    anvil_last_error() returns a message (thread-local) naming the culprit.
 *  - Graph-building calls (anvil_linear, anvil_relu, ...) return an anvil_value.  A
 *    failed call returns ANVIL_NO_VALUE and makes the graph's error sticky: later calls
 *    on the graph also return ANVIL_NO_VALUE, and anvil_graph_status() and every compile
 *    report the first error.  So a model can be built without checking each call.
 *  - Handles are opaque.  Config structs come from anvil_*_default_*() constructors.
 *  - Shapes are int64_t arrays.  In a graph, ANVIL_BATCH as the first dimension stands
 *    for the batch size, which a trainer fixes when it compiles a program.
 */
#ifndef ANVIL_H
#define ANVIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ANVIL_VERSION "0.1.0"
#define ANVIL_MAX_DIMS 8

/* ---------------------------------------------------------------- status */

typedef enum {
    ANVIL_OK = 0,
    ANVIL_ERR_INVALID_ARG,  /* a nonsense argument or option value */
    ANVIL_ERR_SHAPE,        /* shapes or dtypes that do not fit */
    ANVIL_ERR_IO,           /* a file could not be opened, read or written */
    ANVIL_ERR_FORMAT,       /* a file's content is corrupt, truncated or unexpected */
    ANVIL_ERR_OOM,          /* out of host or device memory */
    ANVIL_ERR_DEVICE,       /* no device, or a device/driver/library call failed */
    ANVIL_ERR_UNSUPPORTED,  /* a valid request this build cannot do */
    ANVIL_ERR_STATE,        /* a call made at the wrong time (e.g. on a failed graph) */
} anvil_status;

/* The message of the last failure on this thread ("" if none). */
const char *anvil_last_error(void);
const char *anvil_status_name(anvil_status s);

/* The CPU backend's matrix products go through OpenBLAS, which picks its kernels from the
 * CPU model when it is loaded.  On a CPU it does not recognize (common in virtual
 * machines) it falls back to generic SSE3 kernels, 2-3x slower.  This returns the
 * OPENBLAS_CORETYPE value that selects the right kernels ("SkylakeX" with AVX-512,
 * "Haswell" with AVX2 + FMA) in that case, and NULL when OpenBLAS already uses suitable
 * kernels or OPENBLAS_CORETYPE is set.  The variable must be in the environment before
 * the process starts: set it in the launching shell, or re-execute (the anvil tool
 * does).  A CPU trainer also notes it once on stderr. */
const char *anvil_blas_coretype_advice(void);

/* ---------------------------------------------------------------- dtypes */

typedef enum {
    ANVIL_F32 = 0,
    ANVIL_I32,
    ANVIL_U8,
    ANVIL_BF16,
    ANVIL_I64,
    ANVIL_DTYPE_COUNT
} anvil_dtype;

size_t anvil_dtype_size(anvil_dtype t);
const char *anvil_dtype_name(anvil_dtype t);

/* ---------------------------------------------------------------- tensors
 * Host tensors, reference counted: create gives one reference; retain adds one;
 * release drops one and frees at zero.  Data is contiguous, row-major. */

typedef struct anvil_tensor anvil_tensor;

/* data may be NULL (zero-filled). */
anvil_status anvil_tensor_create(anvil_tensor **out, anvil_dtype dtype, int ndim,
                                 const int64_t *shape, const void *data);
anvil_tensor *anvil_tensor_retain(anvil_tensor *t);
void anvil_tensor_release(anvil_tensor *t);
anvil_dtype anvil_tensor_dtype(const anvil_tensor *t);
int anvil_tensor_ndim(const anvil_tensor *t);
const int64_t *anvil_tensor_shape(const anvil_tensor *t);
int64_t anvil_tensor_numel(const anvil_tensor *t);
size_t anvil_tensor_nbytes(const anvil_tensor *t);
void *anvil_tensor_data(anvil_tensor *t);
const void *anvil_tensor_cdata(const anvil_tensor *t);
/* Copies the tensor's data into dst, which holds dst_bytes; fails if too small. */
anvil_status anvil_tensor_read(const anvil_tensor *t, void *dst, size_t dst_bytes);

/* ---------------------------------------------------------------- devices */

typedef enum { ANVIL_DEVICE_AUTO = 0, ANVIL_DEVICE_CPU, ANVIL_DEVICE_CUDA } anvil_device;

/* ---------------------------------------------------------------- graph */

typedef struct anvil_graph anvil_graph;
typedef int32_t anvil_value;
#define ANVIL_NO_VALUE ((anvil_value)-1)
#define ANVIL_BATCH ((int64_t)-1)

typedef enum {
    ANVIL_INIT_ZEROS = 0,
    ANVIL_INIT_ONES,
    ANVIL_INIT_UNIFORM,  /* U(-a, a) */
    ANVIL_INIT_NORMAL,   /* N(0, a^2) */
} anvil_init_kind;

typedef struct {
    anvil_init_kind kind;
    float a;
} anvil_init;

anvil_status anvil_graph_create(anvil_graph **out);
void anvil_graph_free(anvil_graph *g);
/* ANVIL_OK, or the first error any builder call on g hit. */
anvil_status anvil_graph_status(const anvil_graph *g);
int anvil_graph_value_count(const anvil_graph *g);
/* Shape of a value (may contain ANVIL_BATCH); returns ndim, or -1 if v is invalid. */
int anvil_value_shape(const anvil_graph *g, anvil_value v, int64_t shape[ANVIL_MAX_DIMS]);
anvil_dtype anvil_value_dtype(const anvil_graph *g, anvil_value v);

/* Sources.  An input is fed per step; a parameter is trained; a buffer is persistent
 * state that is not trained (e.g. BatchNorm running statistics). */
anvil_value anvil_input(anvil_graph *g, const char *name, anvil_dtype dtype, int ndim,
                        const int64_t *shape);
anvil_value anvil_param(anvil_graph *g, const char *name, int ndim, const int64_t *shape,
                        anvil_init init);
anvil_value anvil_buffer(anvil_graph *g, const char *name, anvil_dtype dtype, int ndim,
                         const int64_t *shape, anvil_init init);

/* Linear algebra.  matmul: [M,K] x [K,N] (transposes optional); linear: x[...,in] with
 * w[out,in] and b[out] (b may be ANVIL_NO_VALUE) -> x w^T + b, as torch.nn.functional.linear. */
anvil_value anvil_matmul(anvil_graph *g, anvil_value a, anvil_value b, bool trans_a,
                         bool trans_b);
anvil_value anvil_linear(anvil_graph *g, anvil_value x, anvil_value w, anvil_value b);

/* Elementwise arithmetic with NumPy/PyTorch broadcasting. */
anvil_value anvil_add(anvil_graph *g, anvil_value a, anvil_value b);
anvil_value anvil_sub(anvil_graph *g, anvil_value a, anvil_value b);
anvil_value anvil_mul(anvil_graph *g, anvil_value a, anvil_value b);
anvil_value anvil_div(anvil_graph *g, anvil_value a, anvil_value b);
anvil_value anvil_scale(anvil_graph *g, anvil_value x, float s); /* x * s */

/* Activations (PyTorch semantics; gelu: approximate="none" or "tanh"). */
anvil_value anvil_relu(anvil_graph *g, anvil_value x);
anvil_value anvil_leaky_relu(anvil_graph *g, anvil_value x, float negative_slope);
anvil_value anvil_elu(anvil_graph *g, anvil_value x, float alpha);
anvil_value anvil_sigmoid(anvil_graph *g, anvil_value x);
anvil_value anvil_tanh(anvil_graph *g, anvil_value x);
anvil_value anvil_silu(anvil_graph *g, anvil_value x);
anvil_value anvil_gelu(anvil_graph *g, anvil_value x, bool tanh_approximation);
anvil_value anvil_softmax(anvil_graph *g, anvil_value x, int dim);
anvil_value anvil_log_softmax(anvil_graph *g, anvil_value x, int dim);

/* Shape.  reshape: the target may hold ANVIL_BATCH in dim 0 and one -2 (inferred).
 * flatten: keeps dim 0, flattens the rest (torch.nn.Flatten). */
#define ANVIL_INFER_DIM ((int64_t)-2)
anvil_value anvil_reshape(anvil_graph *g, anvil_value x, int ndim, const int64_t *shape);
anvil_value anvil_flatten(anvil_graph *g, anvil_value x);
/* torch.cat: n values (2..6) of one shape but for `dim`, joined along it. */
anvil_value anvil_concat(anvil_graph *g, int n, const anvil_value *xs, int dim);
/* x.narrow(dim, start, length). */
anvil_value anvil_slice(anvil_graph *g, anvil_value x, int dim, int64_t start, int64_t length);

/* Reductions over one dim (dim >= 0 or negative from the end) or over all (dim =
 * ANVIL_ALL_DIMS, giving a scalar). */
#define ANVIL_ALL_DIMS 127
anvil_value anvil_sum(anvil_graph *g, anvil_value x, int dim, bool keepdim);
anvil_value anvil_mean(anvil_graph *g, anvil_value x, int dim, bool keepdim);

/* Dropout: in training a fresh Bernoulli(1-p) mask from the trainer's seeded
 * counter-based generator, scaled by 1/(1-p); identity in evaluation. */
anvil_value anvil_dropout(anvil_graph *g, anvil_value x, float p);

/* Losses, mean over the batch as torch's reduction="mean".
 * cross_entropy: logits [N,C] and labels int32 [N] (class indices) or float [N,C]
 * (probabilities), with label smoothing in [0,1).  bce: probabilities in (0,1).
 * huber: delta; smooth_l1: beta. */
anvil_value anvil_cross_entropy(anvil_graph *g, anvil_value logits, anvil_value target,
                                float label_smoothing);
anvil_value anvil_bce(anvil_graph *g, anvil_value probs, anvil_value target);
anvil_value anvil_bce_with_logits(anvil_graph *g, anvil_value logits, anvil_value target);
anvil_value anvil_mse(anvil_graph *g, anvil_value x, anvil_value target);
anvil_value anvil_l1(anvil_graph *g, anvil_value x, anvil_value target);
anvil_value anvil_huber(anvil_graph *g, anvil_value x, anvil_value target, float delta);
anvil_value anvil_smooth_l1(anvil_graph *g, anvil_value x, anvil_value target, float beta);

/* ---- convolution and pooling (NCHW, float32; torch.nn.functional's semantics) */
/* conv2d: x [N,C,H,W], w [O,C/groups,kh,kw], b [O] or ANVIL_NO_VALUE -> [N,O,OH,OW] with
 * OH = (H + 2*pad_h - dil_h*(kh-1) - 1) / stride_h + 1 (the same for W). */
typedef struct {
    int stride_h, stride_w;      /* 1 */
    int pad_h, pad_w;            /* 0 (zeros) */
    int dilation_h, dilation_w;  /* 1 */
    int groups;                  /* 1: C and O must be multiples of it */
} anvil_conv_params;

anvil_conv_params anvil_conv_default_params(void);
anvil_value anvil_conv2d(anvil_graph *g, anvil_value x, anvil_value w, anvil_value b,
                         const anvil_conv_params *p);
/* Pooling over x [N,C,H,W] with kernel (kh, kw), stride (sh, sw) (0 = the kernel) and
 * zero padding (ph, pw) <= half the kernel; dilation 1, ceil_mode false.  max: the padding
 * never wins; avg: the padding counts in the divisor (count_include_pad=True). */
anvil_value anvil_maxpool2d(anvil_graph *g, anvil_value x, int kh, int kw, int sh, int sw,
                            int ph, int pw);
anvil_value anvil_avgpool2d(anvil_graph *g, anvil_value x, int kh, int kw, int sh, int sw,
                            int ph, int pw);
/* adaptive_avg_pool2d to [N,C,oh,ow]: window i covers [floor(i*H/oh), ceil((i+1)*H/oh)). */
anvil_value anvil_adaptive_avgpool2d(anvil_graph *g, anvil_value x, int oh, int ow);

/* ---- normalization (float32; torch.nn.functional's semantics) */
/* batch_norm over x [N,C,*] (batchnorm1d: [N,C] or [N,C,L]; batchnorm2d: [N,C,H,W]).
 * running_mean, running_var: float32 [C] buffers (anvil_buffer; init zeros and ones, as
 * torch); num_batches_tracked: an int64 [] buffer or ANVIL_NO_VALUE; weight, bias: [C]
 * parameters or ANVIL_NO_VALUE (affine=False).  Training programs normalize with the
 * batch statistics (biased variance) and update the buffers once per step: running =
 * (1-momentum) running + momentum batch (the variance unbiased), num_batches_tracked
 * += 1; momentum NAN is torch's momentum=None (cumulative average; needs the count).
 * Evaluation and prediction normalize with the running statistics (anvil_graph_run
 * never updates them: its training mode only normalizes with the batch statistics). */
anvil_value anvil_batchnorm(anvil_graph *g, anvil_value x, anvil_value running_mean,
                            anvil_value running_var, anvil_value num_batches_tracked,
                            anvil_value weight, anvil_value bias, float eps, float momentum);
/* layer_norm over the last n_normalized_dims dims of x; weight, bias: shaped like those
 * dims, or ANVIL_NO_VALUE (elementwise_affine=False). */
anvil_value anvil_layernorm(anvil_graph *g, anvil_value x, int n_normalized_dims,
                            anvil_value weight, anvil_value bias, float eps);

/* Reverse-mode autodiff as a graph transformation: adds nodes computing d(loss)/d(wrt)
 * for a scalar loss and returns the gradient value (same shape as wrt). */
anvil_value anvil_gradient(anvil_graph *g, anvil_value loss, anvil_value wrt);

/* Runs a graph once (no trainer): feeds[i] gives the value of feed[i] (every INPUT must
 * be fed; PARAMs and BUFFERs not fed start from their init with opt->seed); returns one
 * new host tensor per fetched value.  The batch size comes from the fed inputs. */
typedef struct {
    anvil_device device;   /* AUTO */
    bool training;         /* false: dropout is the identity */
    uint64_t seed;         /* random streams (dropout, init) */
    uint32_t rng_counter;  /* which step's dropout masks */
} anvil_run_options;

anvil_run_options anvil_run_default_options(void);
anvil_status anvil_graph_run(anvil_graph *g, const anvil_run_options *opt, int n_feed,
                             const anvil_value *feed, anvil_tensor *const *feeds, int n_fetch,
                             const anvil_value *fetch, anvil_tensor **out);

/* ---------------------------------------------------------------- models
 * A model is a graph with one input and one output, plus the names PyTorch's
 * state_dict would give its parameters.  Layers use PyTorch's names and defaults. */

typedef struct anvil_model anvil_model;

typedef enum {
    ANVIL_LAYER_LINEAR = 0,
    ANVIL_LAYER_RELU,
    ANVIL_LAYER_LEAKY_RELU,
    ANVIL_LAYER_ELU,
    ANVIL_LAYER_SIGMOID,
    ANVIL_LAYER_TANH,
    ANVIL_LAYER_SILU,
    ANVIL_LAYER_GELU,
    ANVIL_LAYER_SOFTMAX,
    ANVIL_LAYER_LOG_SOFTMAX,
    ANVIL_LAYER_DROPOUT,
    ANVIL_LAYER_FLATTEN,
    ANVIL_LAYER_ADD,
    ANVIL_LAYER_CONV2D,
    ANVIL_LAYER_MAXPOOL2D,
    ANVIL_LAYER_AVGPOOL2D,
    ANVIL_LAYER_ADAPTIVE_AVGPOOL2D,
    ANVIL_LAYER_BATCHNORM1D,
    ANVIL_LAYER_BATCHNORM2D,
    ANVIL_LAYER_LAYERNORM,
    ANVIL_LAYER_CONCAT,
    ANVIL_LAYER_TYPE_COUNT
} anvil_layer_type;

#define ANVIL_MAX_LAYER_INPUTS 8

typedef struct {
    anvil_layer_type type;
    const char *name;        /* optional; state_dict prefix (else the layer index) */
    int n_inputs;            /* 0: the previous layer's output */
    const char *inputs[ANVIL_MAX_LAYER_INPUTS];
    int64_t out_features;    /* linear */
    bool bias;               /* linear (default true) */
    float negative_slope;    /* leaky_relu (0.01) */
    float alpha;             /* elu (1.0) */
    bool gelu_tanh;          /* gelu approximate="tanh" (false) */
    int dim;                 /* softmax / log_softmax (-1); concat (1: channels) */
    float p;                 /* dropout (0.5) */
    int64_t out_channels;    /* conv2d */
    int kernel_size[2];      /* conv2d, maxpool2d, avgpool2d (h, w) */
    int stride[2];           /* conv2d (1, 1); pools (0 = the kernel size) */
    int padding[2];          /* conv2d, pools (0, 0) */
    int dilation[2];         /* conv2d (1, 1) */
    int groups;              /* conv2d (1) */
    int output_size[2];      /* adaptive_avgpool2d */
    float eps;               /* batchnorm, layernorm (1e-5) */
    float momentum;          /* batchnorm (0.1; NAN: cumulative average, torch's None) */
    bool affine;             /* batchnorm (true); layernorm's elementwise_affine (true) */
    int normalized_dims;     /* layernorm: normalize over the last this many dims (1) */
    int64_t num_features;    /* batchnorm: when set (> 0), must equal the input's channels */
} anvil_layer_desc;

anvil_layer_desc anvil_layer_default(anvil_layer_type type);
const char *anvil_layer_type_name(anvil_layer_type type);
/* Parses a type name as model files spell it ("linear", "dense", "swish", ...). */
anvil_status anvil_layer_type_parse(const char *name, anvil_layer_type *out);

/* input_shape: one sample, without the batch dimension. */
anvil_status anvil_model_create(anvil_model **out, const char *name, int ndim,
                                const int64_t *input_shape);
void anvil_model_free(anvil_model *m);
anvil_status anvil_model_add(anvil_model *m, const anvil_layer_desc *layer);
/* A model from a graph the caller built: `input` (dim 0 ANVIL_BATCH) -> `output`.
 * The model takes ownership of g. Parameter names are the graph's names. */
anvil_status anvil_model_from_graph(anvil_model **out, anvil_graph *g, anvil_value input,
                                    anvil_value output);
/* Built-in models: "mlp" (784-512-512-10, ReLU), "cnn" (WORKLOADS.md's cnn-fmnist:
 * conv3x3(32,p1)-ReLU-maxpool2 - conv3x3(64,p1)-ReLU-maxpool2 - linear 128 - ReLU -
 * linear 10, for 1x28x28 inputs) and "resnet18" (CIFAR-style ResNet-18: 3x3 stem of
 * stride 1, no stem max-pool, BatchNorm, 10 classes) for 1x28x28 inputs;
 * anvil_model_resnet18 builds it for any input [C, H, W] and class count. */
anvil_status anvil_model_resnet18(anvil_model **out, int channels, int height, int width, int classes);
anvil_status anvil_model_builtin(anvil_model **out, const char *name);
/* A JSON model file (SPEC §1). */
anvil_status anvil_model_load_json(anvil_model **out, const char *path);
anvil_status anvil_model_parse_json(anvil_model **out, const char *text, const char *origin);
const char *anvil_model_name(const anvil_model *m);
anvil_graph *anvil_model_graph(anvil_model *m);
anvil_value anvil_model_output(const anvil_model *m);
int anvil_model_input_shape(const anvil_model *m, int64_t shape[ANVIL_MAX_DIMS]);
int64_t anvil_model_param_count(const anvil_model *m);

/* ---------------------------------------------------------------- training */

typedef enum {
    ANVIL_LOSS_CROSS_ENTROPY = 0,  /* int32 class labels [N] */
    ANVIL_LOSS_CROSS_ENTROPY_PROBS,/* float probabilities [N,C] */
    ANVIL_LOSS_BCE,
    ANVIL_LOSS_BCE_WITH_LOGITS,
    ANVIL_LOSS_MSE,
    ANVIL_LOSS_L1,
    ANVIL_LOSS_HUBER,
    ANVIL_LOSS_SMOOTH_L1,
    ANVIL_LOSS_COUNT
} anvil_loss_kind;

const char *anvil_loss_name(anvil_loss_kind k);
anvil_status anvil_loss_parse(const char *name, anvil_loss_kind *out);

typedef enum {
    ANVIL_OPT_SGD = 0,
    ANVIL_OPT_ADAM,
    ANVIL_OPT_ADAMW,
    ANVIL_OPT_RMSPROP,
    ANVIL_OPT_ADAGRAD,
    ANVIL_OPT_ADADELTA,
    ANVIL_OPT_NADAM,
    ANVIL_OPT_LBFGS,   /* full-batch, closure-style: see anvil_train_step */
    ANVIL_OPT_COUNT
} anvil_optimizer_kind;

const char *anvil_optimizer_name(anvil_optimizer_kind k);
anvil_status anvil_optimizer_parse(const char *name, anvil_optimizer_kind *out);

/* torch.optim's options under torch's names; anvil_optimizer_default_config(kind) gives
 * torch's defaults for that kind.  An option a kind does not have must keep its default
 * (0/false), else anvil_trainer_create fails naming it. */
typedef struct {
    anvil_optimizer_kind kind;
    float lr;            /* SGD 0.01, Adam/AdamW 0.001, RMSprop 0.01, Adagrad 0.01,
                            Adadelta 1.0, NAdam 0.002 */
    float momentum;      /* SGD, RMSprop (0) */
    float dampening;     /* SGD (0) */
    bool nesterov;       /* SGD (false) */
    float weight_decay;  /* 0; AdamW 0.01 */
    float beta1, beta2;  /* Adam/AdamW/NAdam (0.9, 0.999) */
    float eps;           /* Adam/AdamW/RMSprop/NAdam 1e-8, Adagrad 1e-10, Adadelta 1e-6 */
    /* added later (appended so older initializers keep their meaning) */
    bool maximize;       /* every kind (false): ascend the objective */
    bool amsgrad;        /* Adam/AdamW (false) */
    float alpha;         /* RMSprop smoothing constant (0.99) */
    bool centered;       /* RMSprop (false) */
    float lr_decay;      /* Adagrad (0) */
    float initial_accumulator_value; /* Adagrad (0) */
    float rho;           /* Adadelta (0.9) */
    float momentum_decay;            /* NAdam (0.004) */
    bool decoupled_weight_decay;     /* NAdam (false): AdamW-style decay */
    /* L-BFGS (torch.optim.LBFGS; lr 1) */
    int history_size;                /* 100 */
    int max_iter;                    /* 20: iterations per step */
    int max_eval;                    /* 0: max_iter * 5 / 4, torch's default */
    float tolerance_grad;            /* 1e-7 */
    float tolerance_change;          /* 1e-9 */
    bool strong_wolfe;               /* false: line_search_fn None; true: "strong_wolfe" */
} anvil_optimizer_config;

anvil_optimizer_config anvil_optimizer_default_config(anvil_optimizer_kind kind);
/* The checks anvil_trainer_create makes of an optimizer config, alone. */
anvil_status anvil_optimizer_check(const anvil_optimizer_config *o);

/* Parameter groups (torch's param_groups): the parameters a group selects get its own
 * optimizer options (same kind as the trainer's optimizer).  A parameter belongs to the
 * first group that selects it; the rest form the default group (the trainer's
 * `optimizer`).  Typical use: no weight decay on biases and norm parameters. */
#define ANVIL_MAX_PARAM_GROUPS 8
typedef struct {
    const char *match;      /* comma-separated fnmatch(3) patterns over state_dict names,
                               e.g. "*.bias,bn*"; NULL or "" selects by `ndim1` alone */
    bool ndim1;             /* also every one-dimensional parameter (biases, norm weights) */
    anvil_optimizer_config optimizer;
} anvil_param_group;

/* A group selecting `match` (and 1-D parameters if ndim1) with base's options. */
anvil_param_group anvil_param_group_default(const char *match, bool ndim1,
                                            const anvil_optimizer_config *base);

/* Learning-rate schedules, torch.optim.lr_scheduler's closed forms, computed on the
 * device at the end of every step (no host work, no re-capture).  t counts schedule
 * steps: optimizer steps, or epochs when steps_per_epoch > 0 (t = step / steps_per_epoch,
 * as calling scheduler.step() once per epoch).  Every group's lr follows the schedule
 * from its own base lr. */
typedef enum {
    ANVIL_SCHED_CONSTANT = 0,
    ANVIL_SCHED_STEP,            /* StepLR(step_size, gamma) */
    ANVIL_SCHED_MULTISTEP,       /* MultiStepLR(milestones, gamma) */
    ANVIL_SCHED_EXPONENTIAL,     /* ExponentialLR(gamma) */
    ANVIL_SCHED_COSINE,          /* CosineAnnealingLR(T_max, eta_min) */
    ANVIL_SCHED_COSINE_RESTARTS, /* CosineAnnealingWarmRestarts(T_0, T_mult, eta_min) */
    ANVIL_SCHED_ONE_CYCLE,       /* OneCycleLR(max_lr = the group's lr, total_steps, ...,
                                    cycle_momentum=False); after total_steps the lr stays
                                    at its final value (torch raises) */
    ANVIL_SCHED_PLATEAU,         /* ReduceLROnPlateau: fed by anvil_trainer_schedule_metric */
    ANVIL_SCHED_COUNT
} anvil_schedule_kind;

#define ANVIL_MAX_MILESTONES 16
typedef struct {
    anvil_schedule_kind kind;
    int64_t steps_per_epoch;    /* 0: t = optimizer steps */
    int64_t step_size;          /* step: 1 */
    float gamma;                /* step, multistep 0.1; exponential 0.95 */
    int n_milestones;           /* multistep: increasing milestones */
    int64_t milestones[ANVIL_MAX_MILESTONES];
    int64_t t_max;              /* cosine: 1 */
    float eta_min;              /* cosine, restarts: 0 */
    int64_t t_0, t_mult;        /* restarts: 1, 1 */
    int64_t total_steps;        /* one-cycle: required */
    float pct_start;            /* one-cycle: 0.3 */
    bool anneal_linear;         /* one-cycle: false = cosine annealing */
    float div_factor;           /* one-cycle: 25 */
    float final_div_factor;     /* one-cycle: 1e4 */
    bool three_phase;           /* one-cycle: false */
    bool mode_max;              /* plateau: false = the metric should decrease */
    float factor;               /* plateau: 0.1 */
    int64_t patience;           /* plateau: 10 */
    float threshold;            /* plateau: 1e-4 */
    bool threshold_abs;         /* plateau: false = relative */
    int64_t cooldown;           /* plateau: 0 */
    float min_lr;               /* plateau: 0 */
    float plateau_eps;          /* plateau: 1e-8 */
    /* Linear warm-up composed with any schedule but plateau: for t < warmup the factor
     * goes from warmup_start_factor to 1, then the schedule runs from its own t = 0 —
     * torch's SequentialLR([LinearLR(start_factor, total_iters=warmup), schedule],
     * milestones=[warmup]). */
    int64_t warmup;             /* 0 */
    float warmup_start_factor;  /* 1/3, LinearLR's default */
} anvil_schedule_config;

anvil_schedule_config anvil_schedule_default_config(anvil_schedule_kind kind);
const char *anvil_schedule_name(anvil_schedule_kind k);
/* "cosine", "step", ... (names as the tool takes them) */
anvil_status anvil_schedule_parse(const char *name, anvil_schedule_kind *out);

typedef struct {
    anvil_device device;        /* AUTO */
    anvil_loss_kind loss;       /* CROSS_ENTROPY */
    float label_smoothing;      /* 0 */
    float huber_delta;          /* 1 (huber delta, smooth-L1 beta) */
    anvil_optimizer_config optimizer;  /* Adam */
    uint64_t seed;              /* 0: parameter init, dropout */
    int verbose;                /* 1: say when AUTO falls back to the CPU */
    /* added later (appended so older initializers keep their meaning) */
    int n_param_groups;         /* 0; then the model file's groups, if any, follow */
    const anvil_param_group *param_groups;
    anvil_schedule_config schedule;    /* constant */
    /* Gradient clipping on the device before the update, as torch.nn.utils'
     * clip_grad_value_ then clip_grad_norm_ (foreach) over all parameters: 0 = off. */
    float clip_grad_value;      /* clamp every gradient element to [-v, v] */
    float clip_grad_norm;       /* scale gradients so their total norm is <= this */
    float clip_norm_type;       /* 2; any p > 0, or INFINITY */
} anvil_trainer_config;

anvil_trainer_config anvil_trainer_default_config(void);

typedef struct anvil_trainer anvil_trainer;

/* Allocates every parameter, gradient and optimizer state and initializes parameters
 * from cfg->seed.  The model must outlive the trainer. */
anvil_status anvil_trainer_create(anvil_trainer **out, anvil_model *m,
                                  const anvil_trainer_config *cfg);
void anvil_trainer_free(anvil_trainer *t);
anvil_device anvil_trainer_device(const anvil_trainer *t);

/* One training step: forward, loss, backward and optimizer update, as one program run.
 * x: float32 [B, input...]; y: int32 [B] class labels, or float32 shaped like the
 * model's output for regression / probability losses.  The loss stays on the device.
 * With L-BFGS a step is torch's LBFGS.step(closure) on this batch (pass the whole
 * dataset for full-batch L-BFGS): up to max_iter iterations, each re-running forward and
 * backward as the closure; vectors and the two-loop recursion stay on the device, the
 * host reads the scalars the algorithm branches on.  L-BFGS takes no parameter groups,
 * schedule or clipping (torch's LBFGS has no per-group options either). */
anvil_status anvil_train_step(anvil_trainer *t, const anvil_tensor *x, const anvil_tensor *y);
/* The loss of the most recent step (waits for it). */
anvil_status anvil_trainer_last_loss(anvil_trainer *t, float *loss);
/* Mean loss over the steps since the last call, and resets it (waits). */
anvil_status anvil_trainer_take_mean_loss(anvil_trainer *t, float *mean_loss);
/* Learning rate: written to device memory, used from the next step; no recompile.
 * Sets every group's base lr (the schedule then runs from it). */
anvil_status anvil_trainer_set_lr(anvil_trainer *t, float lr);
anvil_status anvil_trainer_set_group_lr(anvil_trainer *t, int group, float lr);
/* Parameter groups: 0 is the default group, 1..n the config's param_groups, then the
 * model file's (a group that selects no parameter keeps its index). */
int anvil_trainer_param_groups(const anvil_trainer *t);
/* The learning rate the next step of group `group` will use (reads the device). */
anvil_status anvil_trainer_lr(anvil_trainer *t, int group, float *lr);
/* The total gradient norm of the most recent step, before clipping (needs
 * clip_grad_norm > 0; reads the device). */
anvil_status anvil_trainer_last_grad_norm(anvil_trainer *t, float *norm);
/* Feeds reduce-on-plateau (e.g. with the evaluation loss once per epoch), as
 * ReduceLROnPlateau.step(metric); an error for other schedules. */
anvil_status anvil_trainer_schedule_metric(anvil_trainer *t, double metric);
int64_t anvil_trainer_step_count(const anvil_trainer *t);

/* Model output for x (evaluation mode: dropout off).  *out is a new host tensor. */
anvil_status anvil_predict(anvil_trainer *t, const anvil_tensor *x, anvil_tensor **out);

typedef struct {
    double mean_loss;
    double accuracy;   /* for class-index losses; else 0 */
    int64_t samples;
} anvil_eval_result;

/* Parameters: copy to / from named host tensors (state_dict names). */
anvil_status anvil_trainer_get_param(anvil_trainer *t, const char *name, anvil_tensor **out);
anvil_status anvil_trainer_set_param(anvil_trainer *t, const char *name,
                                     const anvil_tensor *value);
/* safetensors with PyTorch state_dict names and layouts (SPEC §2). */
anvil_status anvil_trainer_save(anvil_trainer *t, const char *path);
anvil_status anvil_trainer_load(anvil_trainer *t, const char *path);

/* Resumable checkpoints (safetensors, written atomically: a crash leaves the old file or
 * the new one, never half of one).  They hold the parameters and buffers under their
 * state_dict names (so anvil_trainer_load and PyTorch read them as weights) and, under
 * "anvil.*", the optimizer state, the step count, learning rates and schedule state
 * (reduce-on-plateau's too), the random-number state, the loss accumulators and the data
 * order's position: of the attached resident data, and of batcher `b` when given.
 * Loading into a trainer made with the same model and config (and, for a resident
 * position, after attaching the same data) continues bit for bit like the run that
 * wrote it, on the same device.  A checkpoint of another model, optimizer, schedule or
 * data is refused, naming the difference. */
typedef struct anvil_batcher anvil_batcher;
anvil_status anvil_trainer_save_checkpoint(anvil_trainer *t, const anvil_batcher *b, const char *path);
anvil_status anvil_trainer_load_checkpoint(anvil_trainer *t, anvil_batcher *b, const char *path);

/* The memory plan of the training program for a batch size (compiling it if needed). */
typedef struct {
    size_t persistent_bytes;  /* parameters, gradients, optimizer state, buffers */
    size_t transient_bytes;   /* the planned arena for activations and temporaries */
    size_t unplanned_bytes;   /* the sum of every transient value, as if none were shared */
    int values;               /* transient values planned */
    int inplace;              /* values computed in place over an input */
    int kernels;              /* kernel calls in the program */
    int fused;                /* ops folded into another op's kernel by the fusion pass */
} anvil_plan_stats;

anvil_status anvil_trainer_plan_stats(anvil_trainer *t, int batch_size,
                                      anvil_plan_stats *out);

/* Device-traffic counters of a trainer's backend: in total since creation, and for the
 * most recent training step alone.  host_kernel_launches counts kernels the host
 * launched outside CUDA graphs (0 per step when the step is one graph launch). */
typedef struct {
    int64_t device_allocs;
    int64_t h2d_copies, h2d_bytes;
    int64_t d2h_copies, d2h_bytes;
    int64_t graph_launches;
    int64_t host_kernel_launches;
} anvil_counters;

anvil_status anvil_trainer_counters(const anvil_trainer *t, anvil_counters *total,
                                    anvil_counters *last_step);

/* ---------------------------------------------------------------- datasets */

typedef struct anvil_dataset anvil_dataset;

/* IDX files (optionally gzip-compressed): images uint8 [N, ...] and labels uint8 [N]. */
anvil_status anvil_dataset_load_idx(anvil_dataset **out, const char *images_path,
                                    const char *labels_path);
/* A dataset folder holding {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]. */
anvil_status anvil_dataset_load_folder(anvil_dataset **train, anvil_dataset **test,
                                       const char *dir);
void anvil_dataset_free(anvil_dataset *d);
int64_t anvil_dataset_size(const anvil_dataset *d);
/* Sample shape (images [C,H,W] with C=1 for 2-D IDX images); returns ndim. */
int anvil_dataset_sample_shape(const anvil_dataset *d, int64_t shape[ANVIL_MAX_DIMS]);
int anvil_dataset_classes(const anvil_dataset *d);
#define ANVIL_DEFAULT_DATA_DIR "/usr/share/datasets/fashion-mnist"

/* Seeded batching: an epoch order (shuffled or not) and batches gathered from it;
 * images become float32 pixel/255, labels int32.  The final partial batch is kept. */
typedef struct anvil_batcher anvil_batcher;
anvil_status anvil_batcher_create(anvil_batcher **out, const anvil_dataset *d,
                                  int batch_size, bool shuffle, uint64_t seed);
void anvil_batcher_free(anvil_batcher *b);
int64_t anvil_batcher_batches_per_epoch(const anvil_batcher *b);
/* Next batch of the current epoch into *x and *y (new tensors); *done = true and no
 * tensors when the epoch is over, after which the next call starts a new epoch. */
anvil_status anvil_batcher_next(anvil_batcher *b, anvil_tensor **x, anvil_tensor **y,
                                bool *done);

/* A batcher's place: the epoch it is serving and the next position in its order; seek
 * puts it there (for resuming, see anvil_trainer_load_checkpoint). */
void anvil_batcher_position(const anvil_batcher *b, uint64_t *epoch, int64_t *pos);
anvil_status anvil_batcher_seek(anvil_batcher *b, uint64_t epoch, int64_t pos);

/* Device-resident data: the dataset is copied to the trainer's device once (images as
 * uint8, converted on the device) and every resident step gathers its batch there, in
 * the same order an anvil_batcher with these arguments would give: no host-to-device
 * traffic per step (one small upload of the sample order per epoch).  The dataset's
 * sample shape must be the model's input; the loss must take class labels. */
anvil_status anvil_trainer_attach_data(anvil_trainer *t, const anvil_dataset *d, int batch_size,
                                       bool shuffle, uint64_t seed);
/* One training step on the next batch of the attached data.  At the end of an epoch it
 * takes no step and sets *epoch_done; the next call starts the next epoch. */
anvil_status anvil_train_step_resident(anvil_trainer *t, bool *epoch_done);

/* Mean loss and accuracy over the whole dataset, in evaluation mode. */
anvil_status anvil_evaluate(anvil_trainer *t, const anvil_dataset *d, int batch_size,
                            anvil_eval_result *out);

/* ---------------------------------------------------------------- safetensors */

/* Reads every tensor of a safetensors file: names[i] (owned by the caller, free with
 * anvil_safetensors_free) and tensors[i] (one reference each). */
anvil_status anvil_safetensors_read(const char *path, int *count, char ***names,
                                    anvil_tensor ***tensors);
anvil_status anvil_safetensors_write(const char *path, int count, const char *const *names,
                                     const anvil_tensor *const *tensors);
void anvil_safetensors_free(int count, char **names, anvil_tensor **tensors);

#ifdef __cplusplus
}
#endif
#endif /* ANVIL_H */
