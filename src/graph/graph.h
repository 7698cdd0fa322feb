/* graph.h — the graph IR: nodes (one value each), op definitions, autodiff, the memory
 * plan and compiled programs.  Valid C11 and C++ (CUDA kernels read nodes and steps). */
#ifndef ANVIL_GRAPH_H
#define ANVIL_GRAPH_H

#include "core/core.h"
#include "graph/oplist.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
#define ANVIL_X_ENUM(E, n) OP_##E,
    ANVIL_OPLIST(ANVIL_X_ENUM)
#undef ANVIL_X_ENUM
    OP_COUNT
} anvil_op;

#define ANVIL_MAX_IN 6

/* Row widths of BATCHNORM_MOMENTS and BATCHNORM_BWD_COEF (16-byte rows on the GPU). */
#define ANVIL_BN_MOMENTS_COLS 4
#define ANVIL_BN_COEF_COLS 8

/* Activation kinds for OP_ACT / OP_ACT_BWD (ia[0]); fa[0] is the slope or alpha. */
typedef enum {
    ACT_RELU = 0,
    ACT_LEAKY_RELU,
    ACT_ELU,
    ACT_SIGMOID,
    ACT_TANH,
    ACT_SILU,
    ACT_GELU,
    ACT_GELU_TANH,
} anvil_act_kind;

/* Pointwise loss kinds for OP_PW_LOSS / OP_PW_LOSS_BWD (ia[0]); fa[0] is huber's delta
 * or smooth-L1's beta. */
typedef enum {
    PW_MSE = 0,
    PW_L1,
    PW_BCE,
    PW_BCE_LOGITS,
    PW_HUBER,
    PW_SMOOTH_L1,
} anvil_pw_kind;

/* One node = one op application = one value.
 * Attributes by op (ia = ints, fa = floats):
 *   INPUT/PARAM/BUFFER: name, init.       RESHAPE: shape is the target.
 *   FILL: fa[0] value.                    MATMUL: ia[0] trans_a, ia[1] trans_b; a third
 *           input (set by the fusion pass: a ReLU backward's x) zeroes the product where
 *           it is <= 0.
 *   CONCAT: in (x0, x1, ...) joined along dim ia[0] (normalized).  SLICE: in (x), the
 *           range [ia[1], ia[1] + shape[ia[0]]) of dim ia[0] (its adjoint: concat's).
 *   GATHER: the next batch of the device-resident dataset (anvil_exec.data), in the order
 *           data->order from position hyper->data_cursor: ia[0] 0 = images as float32
 *           pixel/255 [B, sample...], 1 = labels int32 [B].
 *   STEP_END: optional in (the labels GATHER): advances hyper->data_cursor by its B.
 *   LINEAR: in (x, w[, b]); x [..., in]; ia[1] epilogue set by the fusion pass: 0 none,
 *           1 relu (the output is relu(x w^T + b)), 2 gelu with approximate="tanh".
 *   SCALE: fa[0] factor.
 *   REDUCE: ia[0] dim or ANVIL_ALL_DIMS, ia[1] keepdim, ia[2] mean.
 *   SUM_TO: sums in[0] down to shape.     BROADCAST_TO: ia[0] divide by the expansion.
 *   ACT: ia[0] kind, fa[0] param.         ACT_BWD: in (dy, x), same attrs.
 *   SOFTMAX/LOG_SOFTMAX: ia[0] dim.       *_BWD: in (dy, y), ia[0] dim.
 *   DROPOUT: fa[0] p, ia[0] stream.       DROPOUT_BWD: in (dy), same attrs.
 *   CONV2D: in (x [N,C,H,W], w [O,C/groups,kh,kw][, b [O]]) -> [N,O,OH,OW]; ia[0..1]
 *           stride (h, w), ia[2..3] padding, ia[4..5] dilation; groups = C / w.shape[1]
 *           (the builder checks it against the caller's).  OH = (H + 2ph - dh(kh-1) - 1)
 *           / sh + 1, as torch.  ia[6] epilogue set by the fusion pass: 0 none, 1 relu
 *           (the output is relu(conv + b)).  CONV2D_BWD_DATA: in (dy, w), shape is x's.
 *           CONV2D_BWD_FILTER: in (dy, x), shape is w's.  Both: CONV2D's attrs.
 *   MAXPOOL2D / AVGPOOL2D: in (x [N,C,H,W]); ia[0..1] kernel, ia[2..3] stride, ia[4..5]
 *           padding (dilation 1, ceil_mode false; avg counts the padding, as torch).
 *           MAXPOOL2D_BWD: in (dy, x), same attrs (recomputes the first max in scan
 *           order); ia[6] set by the fusion pass: 1 = a ReLU backward's mask too (the
 *           gradient reaches a window's max only where the max is > 0).  AVGPOOL2D_BWD: in (dy), shape is x's, same attrs.
 *   ADAPTIVE_AVGPOOL2D: in (x), ia[0..1] output size; window i: [floor(iH/oh),
 *           ceil((i+1)H/oh)).  _BWD: in (dy), shape is x's, same attrs.
 *   CROSS_ENTROPY: in (logits [N,C], target int32 [N] | float [N,C]), fa[0] smoothing,
 *                  ia[0] 1 if target holds probabilities.  _BWD: in (dloss, logits, t).
 *   PW_LOSS: in (x, t), ia[0] kind, fa[0].  _BWD: in (dloss, x, t).
 *   Batch norm is five ops, so that one sweep over x (forward) and one over x and dy
 *   (backward) serve every consumer:
 *   BATCHNORM_MOMENTS: in (x [N,C,*]) -> [C, 4] float {mean, 1/sqrt(var + eps), unbiased
 *           var, 0} of the batch (biased var, double sums, each rounded to float); fa[0]
 *           eps, ia[0] 1 training / 0 evaluation (then it computes nothing: no reader
 *           looks at it).
 *   BATCHNORM: in (x, running_mean [C], running_var [C][, weight [C]][, bias [C]],
 *           moments); fa[0] eps, fa[1] momentum, ia[0] 1 training (the moments) / 0
 *           evaluation (running statistics), ia[1] has weight, ia[2] has bias.
 *   BATCHNORM_STATS (effect): in (moments, running_mean, running_var[,
 *           num_batches_tracked int64 []]), all buffers updated in place: +1 to the count,
 *           running = (1-m) running + m batch (unbiased variance), m = fa[1] or, if NAN,
 *           1/count.  Every effect node of a model graph is a root of the trainer's
 *           training program.
 *   BATCHNORM_BWD_COEF: in (dy, x, running_mean, running_var[, weight]) -> [C, 8] float
 *           {m, a, k0, k1, dweight, dbias, 0, 0}: dx = a (dy - k0 - (x - m) k1) (k0 = k1
 *           = 0 in evaluation); fa[0] eps, ia[0] training, ia[1] has weight.
 *           BATCHNORM_BWD: in (dy, x, coef) -> dx, ia[0] training.  BATCHNORM_BWD_AFFINE:
 *           in (coef) -> [C], ia[3] 0 dweight, 1 dbias.
 *   LAYERNORM: in (x[, weight][, bias]) over the last ia[0] dims; fa[0] eps, ia[1] has
 *           weight, ia[2] has bias.  LAYERNORM_BWD: in (dy, x[, weight]) -> dx.
 *           LAYERNORM_BWD_AFFINE: in (dy, x) -> the normalized shape, ia[3] 0 dw, 1 db.
 *   Optimizer updates (torch.optim's names; ia[5] maximize on every one; ia[2..4] the
 *   parameter group (anvil_optim_off/len); fa[5] clip_grad_value (0: none); every one
 *   multiplies its gradients by hyper->clip_coef; state slots in anvil_exec.state in this
 *   order, n_params floats each, the group's slice of each):
 *   SGD: fa[0] momentum, fa[1] dampening, fa[2] weight_decay, ia[0] nesterov.
 *        state: [momentum_buffer] if momentum != 0.
 *   ADAM: fa[0] beta1, fa[1] beta2, fa[2] eps, fa[3] weight_decay, ia[0] decoupled (AdamW),
 *         ia[1] amsgrad.  state: exp_avg, exp_avg_sq[, max_exp_avg_sq if amsgrad].
 *   RMSPROP: fa[0] alpha, fa[1] eps, fa[2] weight_decay, fa[3] momentum, ia[0] centered.
 *            state: square_avg[, momentum_buffer if momentum > 0][, grad_avg if centered].
 *   ADAGRAD: fa[0] lr_decay, fa[1] weight_decay, fa[2] eps, fa[3] initial_accumulator_value.
 *            state: sum (zero-filled; step 1 adds the initial value).
 *   ADADELTA: fa[0] rho, fa[1] eps, fa[2] weight_decay.  state: square_avg, acc_delta.
 *   NADAM: fa[0] beta1, fa[1] beta2, fa[2] eps, fa[3] weight_decay, fa[4] momentum_decay,
 *          ia[0] decoupled_weight_decay.  state: exp_avg, exp_avg_sq; mu_product lives in
 *          anvil_hyper's group.
 *   CLIP_NORM (effect, before the updates): fa[0] max_norm, fa[1] norm_type (INFINITY
 *          for the max norm), fa[2] clip_grad_value applied first (0: none); writes
 *          hyper->grad_norm and hyper->clip_coef = min(1, max_norm / (norm + 1e-6)).
 *   STEP_END: also sets every group's lr for the next step from hyper->sched.
 *   ACCUM_LOSS: in (loss).  ACCUM_EVAL: in (loss, output[, labels int32]).
 * The optimizer updates, STEP_END and ACCUM_* have no output: they update persistent state. */
typedef struct {
    anvil_op op;
    anvil_dtype dtype;
    int ndim;
    int64_t shape[ANVIL_MAX_DIMS];
    int n_in;
    anvil_value in[ANVIL_MAX_IN];
    int ia[8];
    float fa[6];
    char *name;      /* sources: state_dict name */
    anvil_init init; /* PARAM/BUFFER */
} anvil_node;

struct anvil_graph {
    anvil_node *nodes;
    int n, cap;
    anvil_status status;  /* sticky first error */
    char *error;          /* its message */
    int dropout_streams;  /* dropout nodes so far (each gets its own random stream) */
};

/* ---- building */
/* Appends a node (inputs checked, shape inferred by the op's definition).  On failure:
 * ANVIL_NO_VALUE, the graph's sticky error set. */
anvil_value anvil_graph_add(anvil_graph *g, const anvil_node *proto);
/* Records a builder error on g (sticky) and returns ANVIL_NO_VALUE. */
anvil_value anvil_graph_fail(anvil_graph *g, anvil_status s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
bool anvil_graph_valid(const anvil_graph *g, anvil_value v);
static inline anvil_node *anvil_node_at(const anvil_graph *g, anvil_value v) { return &g->nodes[v]; }
anvil_status anvil_graph_clone(const anvil_graph *g, anvil_graph **out);
/* A concrete copy: ANVIL_BATCH replaced by batch in every shape; with training false,
 * dropout becomes the identity and batch norm uses its running statistics. */
anvil_status anvil_graph_instantiate(const anvil_graph *g, int64_t batch, bool training,
                                     anvil_graph **out);
int64_t anvil_node_numel(const anvil_node *n);
size_t anvil_node_bytes(const anvil_node *n);
/* Helpers for builder functions. */
anvil_node anvil_node_proto(anvil_op op, int n_in, const anvil_value *in);
anvil_value anvil_op1(anvil_graph *g, anvil_op op, anvil_value a);
anvil_value anvil_op2(anvil_graph *g, anvil_op op, anvil_value a, anvil_value b);

/* ---- op definitions */
typedef struct {
    const char *name;
    int min_in, max_in;
    unsigned flags;
    /* Sets n->shape, n->ndim, n->dtype from the inputs; on a mismatch returns
     * anvil_fail(ANVIL_ERR_SHAPE, ...) naming the op and shapes. */
    anvil_status (*infer)(const anvil_graph *g, anvil_node *n);
    /* Adds nodes computing the input gradients given dy (the gradient of node `self`);
     * need[i] says which inputs want one; sets dx[i] (ANVIL_NO_VALUE if none). */
    void (*vjp)(anvil_graph *g, anvil_value self, anvil_value dy, const bool *need,
                anvil_value *dx);
} anvil_opdef;

enum {
    OPF_SOURCE = 1u << 0,      /* input, param, buffer */
    OPF_ALIAS = 1u << 1,       /* output shares in[0]'s storage */
    OPF_INPLACE = 1u << 2,     /* output may overwrite in[0] (elementwise over in[0]) */
    OPF_EFFECT = 1u << 3,      /* updates persistent state; no output */
    OPF_PERSISTENT = 1u << 4,  /* output lives in the persistent arena */
};

const anvil_opdef *anvil_opdef_of(anvil_op op);
const char *anvil_op_name(anvil_op op);

/* Shape helpers for infer functions.  anvil_broadcast_shape: NumPy rules, with
 * ANVIL_BATCH matching only itself or 1. */
anvil_status anvil_broadcast_shape(const anvil_node *a, const anvil_node *b, anvil_node *out,
                                   const char *op);
int anvil_norm_dim(int dim, int ndim); /* -1 if out of range */

/* ---- autodiff: gradients of scalar `loss` for each of wrt[0..n) into grads[] (a
 * parameter the loss does not reach gets a zero-filled gradient). */
anvil_status anvil_autodiff(anvil_graph *g, anvil_value loss, int n, const anvil_value *wrt,
                            anvil_value *grads);

/* ---- state shared by every program of a trainer, in the persistent arena */

/* Parameters are laid out in the flat arenas padded to this many floats, group by group. */
#define ANVIL_PARAM_ALIGN_FLOATS 64
/* Blocks of the gradient-norm reduction (its partial sums live in anvil_hyper). */
#define ANVIL_CLIP_BLOCKS 256

/* Per parameter group. */
typedef struct {
    float lr;              /* the lr the next update uses (the schedule's value) */
    float base_lr;         /* the group's configured lr, where its schedule starts */
    /* NAdam's running product of mu (a float32 scalar in torch), double-buffered by step
     * parity: the update reads [step & 1] (1 at step 0) and writes [(step + 1) & 1], so
     * one thread can write it while every other thread of the same kernel reads. */
    float nadam_mu_product[2];
} anvil_group_hyper;

typedef struct {
    int32_t step;          /* optimizer steps completed */
    uint32_t seed_lo, seed_hi;
    uint32_t rng_counter;  /* advanced once per training step */
    float loss_last;
    double loss_sum, loss_count;
    double eval_loss_sum, eval_correct, eval_count;
    int64_t data_cursor;   /* next position in the resident dataset's epoch order */
    int32_t n_groups;
    anvil_group_hyper group[ANVIL_MAX_PARAM_GROUPS];
    anvil_schedule_config sched; /* STEP_END sets every group's lr for the next step */
    float grad_norm;       /* CLIP_NORM: the total norm of this step's gradients */
    float clip_coef;       /* ... and the factor every update multiplies them by (1: none) */
    double clip_partial[ANVIL_CLIP_BLOCKS];
} anvil_hyper;

/* An optimizer node's parameter group: index ia[2], the slice [off, off + len) of the
 * flat arenas (ia[3], ia[4] in units of ANVIL_PARAM_ALIGN_FLOATS). */
static inline int64_t anvil_optim_off(const anvil_node *n) { return (int64_t)n->ia[3] * ANVIL_PARAM_ALIGN_FLOATS; }
static inline int64_t anvil_optim_len(const anvil_node *n) { return (int64_t)n->ia[4] * ANVIL_PARAM_ALIGN_FLOATS; }

/* A dataset resident in device memory (all pointers are device pointers). */
typedef struct {
    const uint8_t *images;   /* [n, sample_elems] */
    const int32_t *labels;   /* [n] */
    const uint32_t *order;   /* [n]: this epoch's sample order */
    int64_t n, sample_elems;
} anvil_data;

/* ---- programs: a concrete graph, planned and resolved to pointers */
typedef struct {
    const anvil_node *node;
    const anvil_node *in_node[ANVIL_MAX_IN];
    void *out;
    void *in[ANVIL_MAX_IN];
    int id; /* node id */
    void *ws;        /* the step's own scratch in the transient arena (the backend asked */
    size_t ws_bytes; /* for it when planning; live during this step only), or NULL / 0 */
} anvil_step;

typedef struct {
    float *params;       /* all parameters, contiguous */
    float *grads;        /* all gradients, same layout */
    float *state;        /* optimizer state: slots of n_params each */
    int64_t n_params;
    anvil_hyper *hyper;
    const anvil_data *data; /* host struct describing the resident dataset, or NULL */
    void *backend;       /* the backend's own context */
} anvil_exec;

typedef struct anvil_program anvil_program;

/* Where the planner finds persistent storage: the trainer's layout. */
typedef struct {
    char *persistent;               /* base of the persistent arena (device memory) */
    const size_t *source_offset;    /* per node id of the base graph: PARAM/BUFFER offset */
    int n_base;                     /* nodes in the base graph */
    /* Gradient pins: grad_node[i] (in the concrete graph) is written to grad_offset[i]. */
    int n_grads;
    const anvil_value *grad_node;
    const size_t *grad_offset;
} anvil_persist_map;

struct anvil_program {
    anvil_graph *g;          /* concrete graph, owned */
    anvil_step *steps;
    int n_steps;
    char *transient;         /* arena (device memory), owned */
    size_t transient_bytes;
    anvil_plan_stats stats;
    size_t *offset;          /* per node: byte offset of its storage in its arena */
    size_t *ws_offset;       /* per node: its workspace's offset in the transient arena */
    size_t *ws_bytes;        /* per node: workspace bytes (0: none) */
    signed char *where;      /* per node: 0 none, 1 transient, 2 persistent */
    int64_t batch;
    bool training;
    int n_init;              /* steps[0..n_init) compute constants: run once, before the rest */
    bool initialized;        /* they have run */
    void *backend_state;     /* e.g. a captured CUDA graph */
};

/* The fusion pass on a concrete graph (fuse.c), for the program of these roots, kept
 * values and gradients (as anvil_plan takes them); returns the number of fusions made. */
int anvil_fuse(anvil_graph *g, int n_roots, const anvil_value *roots, const anvil_persist_map *pm, int n_keep,
               const anvil_value *keep);

/* needed[v] (g->n entries): node v is reachable from the roots, kept values or the
 * gradients of pm (plan.c). */
void anvil_mark_needed(const anvil_graph *g, int n_roots, const anvil_value *roots, const anvil_persist_map *pm,
                       int n_keep, const anvil_value *keep, bool *needed);

/* A backend's scratch need for a node's kernel (0: none), asked when planning. */
typedef size_t (*anvil_workspace_fn)(const void *ctx, const anvil_graph *g, const anvil_node *n);

/* Plans memory for the nodes reachable from roots, in node order; with ws_fn, each node
 * also gets the workspace it asks for, live during that node only.  concurrent: for a
 * backend that runs independent steps at once; a node then reuses only memory whose
 * earlier users it depends on anyway, within a bound on the arena's growth (plan.c). */
anvil_status anvil_plan(anvil_program *p, int n_roots, const anvil_value *roots,
                        const anvil_persist_map *pm, const anvil_value *keep, int n_keep,
                        anvil_workspace_fn ws_fn, const void *ws_ctx, bool concurrent);
void *anvil_program_ptr(const anvil_program *p, const anvil_persist_map *pm, anvil_value v);

#ifdef __cplusplus
}
#endif
#endif
