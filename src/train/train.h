/* train.h — internals shared by the trainer, graph_run and evaluation. */
#ifndef ANVIL_TRAIN_H
#define ANVIL_TRAIN_H

#include "backend/backend.h"

/* Compiles `sym` for one batch size: instantiate, plan memory for what `roots` and
 * `keep` need, allocate the transient arena on the backend, resolve every step's
 * pointers, and check the backend has a kernel for each. */
anvil_status anvil_program_compile(anvil_backend *be, const anvil_graph *sym, int64_t batch,
                                   bool training, int n_roots, const anvil_value *roots,
                                   int n_keep, const anvil_value *keep,
                                   const anvil_persist_map *pm, anvil_program **out);
void anvil_program_free(anvil_backend *be, anvil_program *p);

/* Fills a parameter or buffer on the host from its init and the seed (Philox stream
 * `stream`), as float32. */
void anvil_init_fill(float *dst, int64_t n, anvil_init init, uint64_t seed, uint32_t stream);


/* A parameter group of a model file: the options it names override the trainer's. */
enum {
    GO_LR = 1u << 0, GO_MOMENTUM = 1u << 1, GO_DAMPENING = 1u << 2, GO_NESTEROV = 1u << 3,
    GO_WEIGHT_DECAY = 1u << 4, GO_BETAS = 1u << 5, GO_EPS = 1u << 6, GO_MAXIMIZE = 1u << 7,
    GO_AMSGRAD = 1u << 8, GO_ALPHA = 1u << 9, GO_CENTERED = 1u << 10, GO_LR_DECAY = 1u << 11,
    GO_INITIAL_ACC = 1u << 12, GO_RHO = 1u << 13, GO_MOMENTUM_DECAY = 1u << 14,
    GO_DECOUPLED = 1u << 15,
};
typedef struct {
    char *match;
    bool ndim1;
    unsigned set;                 /* GO_* bits of the options given */
    anvil_optimizer_config opt;   /* their values */
} anvil_group_spec;

/* base with the options g sets. */
anvil_optimizer_config anvil_group_spec_apply(const anvil_group_spec *g, const anvil_optimizer_config *base);
/* Parses one entry of a model file's "param_groups" (a cJSON object); errors name
 * origin and the group's index. */
struct cJSON;
anvil_status anvil_group_spec_parse(const char *origin, int index, const struct cJSON *obj, anvil_group_spec *out);
/* Does a group with these patterns / ndim1 select parameter `name` of `ndim` dims? */
bool anvil_group_selects(const char *match, bool ndim1, const char *name, int ndim);

struct anvil_model {
    char *name;
    anvil_graph *g;
    anvil_value input, output;
    int in_ndim;
    int64_t in_shape[ANVIL_MAX_DIMS];
    int n_layers, cap_layers;
    char **layer_names;         /* user names (NULL when unnamed) */
    anvil_value *layer_out;
    int n_groups;                 /* parameter groups from the model file */
    anvil_group_spec *groups;
};

/* ---- the trainer (trainer.c; checkpoint.c reads and restores its state) */
enum { PROG_TRAIN, PROG_EVAL, PROG_PREDICT, PROG_TRAIN_RESIDENT };

typedef struct {
    int kind;
    int64_t batch;
    anvil_program *p;
} cached_program;

struct anvil_trainer {
    anvil_model *model;
    anvil_trainer_config cfg;
    anvil_backend *be;
    anvil_graph *train_g, *eval_g;  /* symbolic */
    anvil_value train_y, train_loss;
    anvil_value *roots;             /* updates, clipping, loss accumulation, step end, then
                                       the model's effect nodes */
    int n_roots;
    anvil_value step_end;           /* the STEP_END node of train_g */
    /* parameter groups: options, and their slices of the flat arenas (floats) */
    int n_groups;
    anvil_optimizer_config group_opt[ANVIL_MAX_PARAM_GROUPS];
    int64_t group_off[ANVIL_MAX_PARAM_GROUPS], group_len[ANVIL_MAX_PARAM_GROUPS];
    int *param_group;               /* per parameter */
    int slots;                      /* optimizer state slots (n_params floats each) */
    struct anvil_lbfgs *lbfgs;      /* L-BFGS's state (src/optim/lbfgs.c), or NULL */
    /* reduce-on-plateau's state, on the host as torch keeps it (lrs in double) */
    struct {
        double best, lr[ANVIL_MAX_PARAM_GROUPS];
        int64_t num_bad, cooldown_counter, last_epoch;
    } plateau;
    anvil_value eval_y, eval_root;
    /* persistent arena */
    char *persistent;
    size_t persistent_bytes;
    size_t *source_offset;          /* per model-graph node (SIZE_MAX: not persistent) */
    int n_params;
    anvil_value *params;            /* PARAM nodes */
    anvil_value *grads;             /* their gradients in train_g */
    size_t *grad_offset;
    anvil_exec ex;
    cached_program *progs;
    int n_progs, cap_progs;
    anvil_counters last_step;
    int64_t steps;
    /* device-resident data */
    anvil_graph *res_g;             /* train_g reading its batches by GATHER */
    anvil_data data;
    char *data_mem;
    uint32_t *order_host;
    int res_batch;
    bool res_shuffle, res_begin;
    uint64_t res_seed, res_epoch;
    int64_t res_pos;
};

/* Downloads the hyperparameters (after waiting for the device). */
anvil_status anvil_trainer_read_hyper(anvil_trainer *t, anvil_hyper *h);
/* Checks named tensors against the model's parameters and buffers (every one present,
 * shapes and dtypes right; names starting with `skip` are not the model's and are left
 * alone), then uploads them: a bad file changes nothing.  origin names the file. */
anvil_status anvil_trainer_put_sources(anvil_trainer *t, const char *origin, int n, char **names,
                                       anvil_tensor **ts, const char *skip);
/* The resident data's epoch order for t->res_epoch, uploaded (no cursor change). */
anvil_status anvil_trainer_upload_order(anvil_trainer *t);

#endif
