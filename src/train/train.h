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

#endif
