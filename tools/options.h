/* options.h — the command line of `anvil train` (SPEC §3), parsed and validated.
 *
 * Parsing never exits: it returns a status and, on a usage error, writes a message that
 * names the option and the offending value into err.  The caller prints it and exits 2. */
#ifndef ANVIL_TOOL_OPTIONS_H
#define ANVIL_TOOL_OPTIONS_H

#include "anvil.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *model;        /* built-in name or model file (default "mlp") */
    const char *data;         /* dataset folder (default ANVIL_DEFAULT_DATA_DIR) */
    int64_t epochs;           /* 1 */
    int64_t steps;            /* 0: not given; else the total number of steps */
    int64_t batch_size;       /* 128 */
    anvil_optimizer_kind optimizer; /* adam */
    bool have_lr;
    float lr;
    bool have_momentum;
    float momentum;
    bool nesterov;
    bool have_weight_decay;
    float weight_decay;
    anvil_loss_kind loss;     /* cross_entropy */
    uint64_t seed;            /* 0 */
    bool shuffle;             /* true unless --no-shuffle */
    anvil_device device;      /* auto */
    const char *init_weights; /* NULL */
    const char *save;         /* NULL */
    bool json;
    bool help;                /* --help / -h was given: print usage, exit 0 */
} tool_options;

typedef enum {
    TOOL_PARSE_OK = 0,
    TOOL_PARSE_USAGE,   /* a bad option or value: message in err, exit status 2 */
} tool_parse_status;

void tool_options_default(tool_options *o);

/* Parses the arguments that follow "train" (argv[0] is the first option). */
tool_parse_status tool_options_parse(tool_options *o, int argc, char **argv, char *err,
                                     size_t err_cap);

/* The usage text of `anvil train`. */
extern const char tool_train_usage[];

#endif
