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

/* Persistent arena layout helpers. */
#define ANVIL_PARAM_ALIGN_FLOATS 64

struct anvil_model {
    char *name;
    anvil_graph *g;
    anvil_value input, output;
    int in_ndim;
    int64_t in_shape[ANVIL_MAX_DIMS];
    int n_layers, cap_layers;
    char **layer_names;         /* user names (NULL when unnamed) */
    anvil_value *layer_out;
};

#endif
