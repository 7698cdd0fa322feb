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
    /* optimizer options given on the command line: opt_given bit i = tool_opt_flags[i] */
    anvil_optimizer_config opt;
    uint32_t opt_given;
    /* --schedule NAME[,key=value...]: what was not given is filled in from the run */
    anvil_schedule_config schedule;
    bool sched_per_step, sched_have_per, sched_have_t_max, sched_have_total;
    float clip_grad_norm, clip_grad_value, clip_norm_type; /* 0, 0, 2 */
    bool have_clip_norm_type;
    const char *checkpoint;   /* --checkpoint FILE (default anvil-checkpoint.safetensors) */
    int64_t checkpoint_every; /* 0: no checkpoints */
    const char *resume;       /* --resume FILE */
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

/* The optimizer options the tool takes, in opt_given's bit order. */
typedef struct {
    const char *flag;
    enum { TOOL_OPT_FLOAT, TOOL_OPT_BOOL, TOOL_OPT_PAIR, TOOL_OPT_INT, TOOL_OPT_LINE_SEARCH } kind;
    size_t offset; /* of the field (of the first, for a pair) in anvil_optimizer_config */
} tool_opt_flag;
extern const tool_opt_flag tool_opt_flags[];
extern const int tool_n_opt_flags;
/* Writes the given options over c. */
void tool_apply_optimizer_options(const tool_options *o, anvil_optimizer_config *c);

/* Parses the arguments that follow "train" (argv[0] is the first option). */
tool_parse_status tool_options_parse(tool_options *o, int argc, char **argv, char *err,
                                     size_t err_cap);

/* --schedule's value (schedule_spec.c). */
tool_parse_status tool_parse_schedule(tool_options *o, const char *v, char *err, size_t cap);
/* The schedule for a run of total_steps optimizer steps, steps_per_epoch per epoch. */
void tool_finish_schedule(const tool_options *o, int64_t steps_per_epoch, int64_t total_steps,
                                  anvil_schedule_config *out);

/* The usage text of `anvil train`. */
extern const char tool_train_usage[];

#endif
