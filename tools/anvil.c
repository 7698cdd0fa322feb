/* anvil.c — the `anvil` command-line tool (SPEC §3).
 *
 *   anvil train [options]     train a model on an IDX dataset folder
 *   anvil --help | --version
 *
 * Exit status: 0 success, 1 runtime error (data, files, device), 2 bad command line. */
#include "anvil.h"
#include "eval.h"
#include "options.h"
#include "progress.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

static const char main_usage[] =
    "usage: anvil <command> [options]\n"
    "\n"
    "Commands:\n"
    "  train        train a model on a dataset folder (anvil train --help for options)\n"
    "\n"
    "Options:\n"
    "  -h, --help   this text\n"
    "  --version    the version and the backends this build has\n";

/* ---------------------------------------------------------------- helpers */

static const char *lib_error(anvil_status s)
{
    const char *m = anvil_last_error();
    if (m && *m)
        return m;
    const char *n = anvil_status_name(s);
    return n && *n ? n : "unknown error";
}

/* A non-finite value is not JSON: it is written as null. */
static void json_number(char *buf, size_t cap, double v, const char *fmt)
{
    if (isfinite(v))
        snprintf(buf, cap, fmt, v);
    else
        snprintf(buf, cap, "null");
}

static bool is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static void shape_string(char *buf, size_t cap, int ndim, const int64_t *shape)
{
    size_t len = 0;
    int w = snprintf(buf, cap, "[");
    len = w > 0 ? (size_t)w : 0;
    for (int i = 0; i < ndim && len < cap; i++) {
        w = snprintf(buf + len, cap - len, "%s%lld", i ? ", " : "", (long long)shape[i]);
        if (w < 0)
            return;
        len += (size_t)w;
    }
    if (len < cap)
        snprintf(buf + len, cap - len, "]");
}

static int64_t numel_of(int ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    return n;
}

static bool loss_takes_class_indices(anvil_loss_kind k) { return k == ANVIL_LOSS_CROSS_ENTROPY; }

/* ---------------------------------------------------------------- train */

typedef struct {
    anvil_model *model;
    anvil_dataset *train, *test;
    anvil_trainer *trainer;
    anvil_batcher *batcher;
    tool_adapter ad;                    /* dataset batches -> model inputs and targets */
} train_state;

static void train_state_free(train_state *s)
{
    anvil_batcher_free(s->batcher);
    anvil_trainer_free(s->trainer); /* before the model: the model outlives the trainer */
    anvil_model_free(s->model);
    anvil_dataset_free(s->train);
    anvil_dataset_free(s->test);
    memset(s, 0, sizeof *s);
}

static int load_model(train_state *s, const char *spec)
{
    anvil_status st;
    if (ends_with(spec, ".json") || strchr(spec, '/') || is_file(spec)) {
        st = anvil_model_load_json(&s->model, spec);
        if (st != ANVIL_OK) {
            s->model = NULL;
            fprintf(stderr, "anvil train: cannot load model file '%s': %s\n", spec,
                    lib_error(st));
            return EXIT_RUNTIME;
        }
        return 0;
    }
    st = anvil_model_builtin(&s->model, spec);
    if (st != ANVIL_OK) {
        s->model = NULL;
        fprintf(stderr, "anvil train: --model '%s': %s\n", spec, lib_error(st));
        if (st == ANVIL_ERR_INVALID_ARG || st == ANVIL_ERR_UNSUPPORTED) {
            fprintf(stderr, "Built-in models: mlp, cnn, resnet18; or give a model file (FILE.json).\n");
            return EXIT_USAGE;
        }
        return EXIT_RUNTIME;
    }
    return 0;
}

/* Checks that the dataset's samples and labels fit the model. */
static int check_fit(train_state *s, const tool_options *o)
{
    tool_adapter *a = &s->ad;
    a->loss = o->loss;
    a->one_hot = !loss_takes_class_indices(o->loss);
    a->huber_delta = anvil_trainer_default_config().huber_delta;
    a->in_ndim = anvil_model_input_shape(s->model, a->in_shape);
    int64_t ds_shape[ANVIL_MAX_DIMS];
    int ds_ndim = anvil_dataset_sample_shape(s->train, ds_shape);
    if (a->in_ndim <= 0 || ds_ndim <= 0) {
        fprintf(stderr, "anvil train: cannot read the input shape of the model or the dataset\n");
        return EXIT_RUNTIME;
    }
    char ms[128], ds[128];
    shape_string(ms, sizeof ms, a->in_ndim, a->in_shape);
    shape_string(ds, sizeof ds, ds_ndim, ds_shape);
    if (numel_of(a->in_ndim, a->in_shape) != numel_of(ds_ndim, ds_shape)) {
        fprintf(stderr,
                "anvil train: model '%s' takes samples shaped %s (%lld values) but the dataset "
                "in '%s' has samples shaped %s (%lld values)\n",
                o->model, ms, (long long)numel_of(a->in_ndim, a->in_shape), o->data, ds,
                (long long)numel_of(ds_ndim, ds_shape));
        return EXIT_RUNTIME;
    }
    a->reshape = a->in_ndim != ds_ndim ||
                       memcmp(a->in_shape, ds_shape, (size_t)ds_ndim * sizeof(int64_t)) != 0;

    int64_t out_shape[ANVIL_MAX_DIMS];
    anvil_graph *g = anvil_model_graph(s->model);
    int out_ndim = g ? anvil_value_shape(g, anvil_model_output(s->model), out_shape) : -1;
    if (out_ndim < 2) {
        fprintf(stderr, "anvil train: model '%s' has no [batch, classes] output\n", o->model);
        return EXIT_RUNTIME;
    }
    a->classes = out_shape[out_ndim - 1];
    int ds_classes = anvil_dataset_classes(s->train);
    if (out_ndim != 2 || a->classes < ds_classes) {
        shape_string(ms, sizeof ms, out_ndim - 1, out_shape + 1);
        fprintf(stderr,
                "anvil train: model '%s' outputs %s per sample but the dataset in '%s' has %d "
                "classes\n",
                o->model, ms, o->data, ds_classes);
        return EXIT_RUNTIME;
    }
    return 0;
}

static anvil_status step_once(train_state *s, anvil_tensor *x, anvil_tensor *y)
{
    anvil_tensor *xin = NULL, *yin = NULL;
    anvil_status st = tool_adapt_x(&s->ad, x, &xin);
    if (st == ANVIL_OK)
        st = tool_adapt_y(&s->ad, y, &yin);
    if (st == ANVIL_OK)
        st = anvil_train_step(s->trainer, xin, yin);
    anvil_tensor_release(xin);
    anvil_tensor_release(yin);
    return st;
}

typedef struct {
    int64_t epoch, step;
    double train_loss, test_loss, test_accuracy, seconds, samples_per_s;
} report;

static void print_json(const char *event, const report *r)
{
    char tl[40], vl[40], va[40], sec[40], sps[40];
    json_number(tl, sizeof tl, r->train_loss, "%.6g");
    json_number(vl, sizeof vl, r->test_loss, "%.6g");
    json_number(va, sizeof va, r->test_accuracy, "%.6g");
    json_number(sec, sizeof sec, r->seconds, "%.4f");
    json_number(sps, sizeof sps, r->samples_per_s, "%.1f");
    printf("{\"event\":\"%s\",\"epoch\":%lld,\"step\":%lld,\"train_loss\":%s,\"test_loss\":%s,"
           "\"test_accuracy\":%s,\"seconds\":%s,\"samples_per_s\":%s}\n",
           event, (long long)r->epoch, (long long)r->step, tl, vl, va, sec, sps);
    fflush(stdout);
}

static int save_checkpoint(train_state *s, const tool_options *o, bool resident, int64_t step)
{
    anvil_status st = anvil_trainer_save_checkpoint(s->trainer, resident ? NULL : s->batcher, o->checkpoint);
    if (st != ANVIL_OK) {
        fprintf(stderr, "anvil train: cannot write checkpoint '%s': %s\n", o->checkpoint, lib_error(st));
        return EXIT_RUNTIME;
    }
    if (!o->json) {
        printf("anvil: checkpoint at step %lld: %s\n", (long long)step, o->checkpoint);
        fflush(stdout);
    }
    return 0;
}

static const char *device_name(anvil_device d)
{
    switch (d) {
    case ANVIL_DEVICE_CPU: return "cpu";
    case ANVIL_DEVICE_CUDA: return "cuda";
    default: return "auto";
    }
}

static int run_train(const tool_options *o)
{
    train_state s;
    memset(&s, 0, sizeof s);
    int rc = load_model(&s, o->model);
    if (rc)
        goto out;

    anvil_status st = anvil_dataset_load_folder(&s.train, &s.test, o->data);
    if (st != ANVIL_OK) {
        s.train = s.test = NULL;
        fprintf(stderr, "anvil train: cannot load the dataset in '%s': %s\n", o->data,
                lib_error(st));
        rc = EXIT_RUNTIME;
        goto out;
    }
    if (anvil_dataset_size(s.train) <= 0 || anvil_dataset_size(s.test) <= 0) {
        fprintf(stderr, "anvil train: the dataset in '%s' has an empty %s set\n", o->data,
                anvil_dataset_size(s.train) <= 0 ? "training" : "test");
        rc = EXIT_RUNTIME;
        goto out;
    }
    rc = check_fit(&s, o);
    if (rc)
        goto out;

    anvil_trainer_config cfg = anvil_trainer_default_config();
    cfg.device = o->device;
    cfg.loss = o->loss;
    cfg.seed = o->seed;
    cfg.verbose = o->json ? 0 : 1;
    cfg.optimizer = anvil_optimizer_default_config(o->optimizer);
    tool_apply_optimizer_options(o, &cfg.optimizer);
    cfg.clip_grad_norm = o->clip_grad_norm;
    cfg.clip_grad_value = o->clip_grad_value;
    cfg.clip_norm_type = o->clip_norm_type;
    int64_t n_train = anvil_dataset_size(s.train);
    int64_t per_epoch = (n_train + o->batch_size - 1) / o->batch_size;
    int64_t epochs = o->steps > 0 ? (o->steps + per_epoch - 1) / per_epoch : o->epochs;
    tool_finish_schedule(o, per_epoch, o->steps > 0 ? o->steps : epochs * per_epoch, &cfg.schedule);
    st = anvil_trainer_create(&s.trainer, s.model, &cfg);
    if (st != ANVIL_OK) {
        s.trainer = NULL;
        fprintf(stderr, "anvil train: cannot create a trainer for model '%s' on device %s: %s\n",
                o->model, device_name(o->device), lib_error(st));
        /* a bad combination of options is a usage error */
        rc = st == ANVIL_ERR_INVALID_ARG ? EXIT_USAGE : EXIT_RUNTIME;
        goto out;
    }
    if (o->init_weights) {
        st = anvil_trainer_load(s.trainer, o->init_weights);
        if (st != ANVIL_OK) {
            fprintf(stderr, "anvil train: cannot load --init-weights '%s': %s\n",
                    o->init_weights, lib_error(st));
            rc = EXIT_RUNTIME;
            goto out;
        }
    }
    st = anvil_batcher_create(&s.batcher, s.train, (int)o->batch_size, o->shuffle, o->seed);
    if (st != ANVIL_OK) {
        s.batcher = NULL;
        fprintf(stderr, "anvil train: cannot batch the training set: %s\n", lib_error(st));
        rc = EXIT_RUNTIME;
        goto out;
    }
    /* The dataset on the device once, batches gathered there (same order as the
     * batcher's): no copy per step.  Host batches when the samples need adapting or the
     * device has no room. */
    bool resident = false;
    if (!s.ad.reshape && !s.ad.one_hot) {
        st = anvil_trainer_attach_data(s.trainer, s.train, (int)o->batch_size, o->shuffle, o->seed);
        resident = st == ANVIL_OK;
        if (!resident && st != ANVIL_ERR_OOM) {
            fprintf(stderr, "anvil train: cannot put the training set on the device: %s\n", lib_error(st));
            rc = EXIT_RUNTIME;
            goto out;
        }
        if (!resident && !o->json)
            printf("anvil: the training set does not fit on the device (%s); copying each batch\n",
                   lib_error(st));
    }
    if (anvil_batcher_batches_per_epoch(s.batcher) != per_epoch) {
        fprintf(stderr, "anvil train: the training set in '%s' gives no batches\n", o->data);
        rc = EXIT_RUNTIME;
        goto out;
    }
    int64_t step = 0;
    if (o->resume) {
        st = anvil_trainer_load_checkpoint(s.trainer, resident ? NULL : s.batcher, o->resume);
        if (st != ANVIL_OK) {
            fprintf(stderr, "anvil train: cannot resume from '%s': %s\n", o->resume, lib_error(st));
            rc = EXIT_RUNTIME;
            goto out;
        }
        step = anvil_trainer_step_count(s.trainer);
        if (!o->json)
            printf("anvil: resumed from %s at step %lld\n", o->resume, (long long)step);
    }

    if (!o->json) {
        anvil_optimizer_config *oc = &cfg.optimizer;
        printf("anvil: model '%s' (%lld parameters) on %s; %lld training / %lld test samples "
               "from %s\n",
               anvil_model_name(s.model) ? anvil_model_name(s.model) : o->model,
               (long long)anvil_model_param_count(s.model),
               device_name(anvil_trainer_device(s.trainer)),
               (long long)anvil_dataset_size(s.train), (long long)anvil_dataset_size(s.test),
               o->data);
        printf("anvil: %s lr %g, batch %lld, loss %s, %lld %s\n",
               anvil_optimizer_name(oc->kind), (double)oc->lr, (long long)o->batch_size,
               anvil_loss_name(o->loss), (long long)(o->steps > 0 ? o->steps : epochs),
               o->steps > 0 ? "steps" : (epochs == 1 ? "epoch" : "epochs"));
        fflush(stdout);
    }

    bool bar = !o->json && tool_progress_tty();
    int64_t samples_total = 0;
    double seconds_total = 0.0, loss_weighted = 0.0;
    report last = {0};
    int64_t epoch = 0;
    for (epoch = step / per_epoch + 1; epoch <= epochs; epoch++) {
        /* a resumed run starts inside its epoch */
        int64_t ep_steps = step - (epoch - 1) * per_epoch, ep_samples = ep_steps * o->batch_size;
        int64_t planned = per_epoch;
        if (o->steps > 0 && o->steps - (epoch - 1) * per_epoch < planned)
            planned = o->steps - (epoch - 1) * per_epoch;
        tool_progress prog;
        tool_progress_begin(&prog, bar, epoch, o->steps > 0 ? 0 : epochs, planned);
        double t0 = prog.t_start;
        for (;;) {
            if (o->steps > 0 && step >= o->steps)
                break;
            bool done = false;
            int64_t bs = 0;
            if (resident) {
                st = anvil_train_step_resident(s.trainer, &done);
                bs = n_train - ep_samples < o->batch_size ? n_train - ep_samples : o->batch_size;
            } else {
                anvil_tensor *x = NULL, *y = NULL;
                st = anvil_batcher_next(s.batcher, &x, &y, &done);
                if (st != ANVIL_OK) {
                    tool_progress_clear(&prog);
                    fprintf(stderr, "anvil train: cannot read a training batch: %s\n",
                            lib_error(st));
                    rc = EXIT_RUNTIME;
                    goto out;
                }
                if (!done) {
                    bs = anvil_tensor_ndim(x) > 0 ? anvil_tensor_shape(x)[0] : 0;
                    st = step_once(&s, x, y);
                }
                anvil_tensor_release(x);
                anvil_tensor_release(y);
            }
            if (done && st == ANVIL_OK)
                break;
            if (st != ANVIL_OK) {
                tool_progress_clear(&prog);
                fprintf(stderr, "anvil train: training step %lld failed: %s\n",
                        (long long)step + 1, lib_error(st));
                rc = EXIT_RUNTIME;
                goto out;
            }
            step++;
            ep_steps++;
            ep_samples += bs;
            /* at an epoch's last step: after its evaluation (below), so a resumed run
             * starts the next epoch as this one would */
            if (o->checkpoint_every && step % o->checkpoint_every == 0 && ep_steps < planned) {
                tool_progress_clear(&prog);
                rc = save_checkpoint(&s, o, resident, step);
                if (rc)
                    goto out;
            }
            if (bar) {
                double now = tool_now();
                if (tool_progress_due(&prog, now) || ep_steps == planned) {
                    float loss = 0.0f;
                    bool have = anvil_trainer_last_loss(s.trainer, &loss) == ANVIL_OK;
                    tool_progress_draw(&prog, now, ep_steps, ep_samples, loss, have);
                }
            }
        }
        float mean_loss = NAN;
        if (ep_steps > 0) {
            st = anvil_trainer_take_mean_loss(s.trainer, &mean_loss);
            if (st != ANVIL_OK) {
                tool_progress_clear(&prog);
                fprintf(stderr, "anvil train: cannot read the training loss: %s\n",
                        lib_error(st));
                rc = EXIT_RUNTIME;
                goto out;
            }
        }
        double secs = tool_now() - t0;
        tool_progress_message(&prog, "evaluating on the test set ...");

        anvil_eval_result ev;
        memset(&ev, 0, sizeof ev);
        /* anvil_evaluate covers class labels with samples shaped like the model input;
         * otherwise the tool evaluates through anvil_predict. */
        if (s.ad.reshape || s.ad.one_hot)
            st = tool_evaluate(s.trainer, s.test, (int)o->batch_size, &s.ad, &ev);
        else
            st = anvil_evaluate(s.trainer, s.test, (int)o->batch_size, &ev);
        tool_progress_clear(&prog);
        if (st != ANVIL_OK) {
            fprintf(stderr, "anvil train: evaluation on the test set failed: %s\n",
                    lib_error(st));
            rc = EXIT_RUNTIME;
            goto out;
        }

        if (cfg.schedule.kind == ANVIL_SCHED_PLATEAU) {
            st = anvil_trainer_schedule_metric(s.trainer, ev.mean_loss);
            if (st != ANVIL_OK) {
                fprintf(stderr, "anvil train: reduce-on-plateau: %s\n", lib_error(st));
                rc = EXIT_RUNTIME;
                goto out;
            }
        }
        seconds_total += secs;
        samples_total += ep_samples;
        loss_weighted += (double)mean_loss * (double)ep_steps;
        last.epoch = epoch;
        last.step = step;
        last.train_loss = mean_loss;
        last.test_loss = ev.mean_loss;
        last.test_accuracy = ev.accuracy;
        last.seconds = secs;
        last.samples_per_s = secs > 0.0 ? (double)ep_samples / secs : 0.0;
        if (o->json) {
            print_json("epoch", &last);
        } else {
            char head[48];
            if (o->steps > 0)
                snprintf(head, sizeof head, "epoch %lld", (long long)epoch);
            else
                snprintf(head, sizeof head, "epoch %lld/%lld", (long long)epoch,
                         (long long)epochs);
            printf("%s  step %lld  train_loss %.4f  test_loss %.4f  test_accuracy %.4f  "
                   "%.2f s  %.0f samples/s\n",
                   head, (long long)step, (double)mean_loss, ev.mean_loss, ev.accuracy, secs,
                   last.samples_per_s);
            fflush(stdout);
        }
        if (o->checkpoint_every && step % o->checkpoint_every == 0) {
            rc = save_checkpoint(&s, o, resident, step);
            if (rc)
                goto out;
        }
        if (o->steps > 0 && step >= o->steps)
            break;
    }

    if (o->save) {
        st = anvil_trainer_save(s.trainer, o->save);
        if (st != ANVIL_OK) {
            fprintf(stderr, "anvil train: cannot save parameters to '%s': %s\n", o->save,
                    lib_error(st));
            rc = EXIT_RUNTIME;
            goto out;
        }
    }

    report fin = last;
    fin.step = step;
    fin.train_loss = step > 0 ? loss_weighted / (double)step : NAN;
    fin.seconds = seconds_total;
    fin.samples_per_s = seconds_total > 0.0 ? (double)samples_total / seconds_total : 0.0;
    if (o->json) {
        print_json("done", &fin);
    } else {
        printf("done: %lld %s, %lld steps in %.2f s (%.0f samples/s); train_loss %.4f; "
               "test_loss %.4f; test accuracy %.2f%%\n",
               (long long)fin.epoch, fin.epoch == 1 ? "epoch" : "epochs", (long long)fin.step,
               fin.seconds, fin.samples_per_s, fin.train_loss, fin.test_loss,
               fin.test_accuracy * 100.0);
        if (o->save)
            printf("saved parameters to %s\n", o->save);
        fflush(stdout);
    }
    rc = 0;

out:
    train_state_free(&s);
    return rc;
}

static int cmd_train(int argc, char **argv)
{
    tool_options o;
    tool_options_default(&o);
    char err[1024] = "";
    if (tool_options_parse(&o, argc, argv, err, sizeof err) != TOOL_PARSE_OK) {
        fprintf(stderr, "anvil train: %s\nTry 'anvil train --help'.\n", err);
        return EXIT_USAGE;
    }
    if (o.help) {
        fputs(tool_train_usage, stdout);
        return 0;
    }
    return run_train(&o);
}

/* OpenBLAS fell back to generic kernels on a CPU it did not recognize and reads
 * OPENBLAS_CORETYPE only when loaded: run again with the right kernels (2-3x faster CPU
 * training).  If the exec fails, go on as we are (the library notes it on stderr). */
static void reexec_for_blas(char **argv)
{
#ifdef __linux__
    const char *ct = anvil_blas_coretype_advice();
    if (!ct || setenv("OPENBLAS_CORETYPE", ct, 1) != 0)
        return;
    execv("/proc/self/exe", argv);
    unsetenv("OPENBLAS_CORETYPE");
#else
    (void)argv;
#endif
}

int main(int argc, char **argv)
{
    reexec_for_blas(argv);
    if (argc < 2) {
        fputs(main_usage, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(main_usage, stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
#ifdef ANVIL_HAVE_CUDA
        printf("anvil %s (backends: cpu, cuda)\n", ANVIL_VERSION);
#else
        printf("anvil %s (backends: cpu)\n", ANVIL_VERSION);
#endif
        return 0;
    }
    if (strcmp(cmd, "train") == 0) {
        int rc = cmd_train(argc - 2, argv + 2);
        if (fflush(stdout) != 0 && rc == 0) {
            fprintf(stderr, "anvil: cannot write to stdout\n");
            rc = EXIT_RUNTIME;
        }
        return rc;
    }
    fprintf(stderr, "anvil: unknown command '%s'\n%s", cmd, main_usage);
    return EXIT_USAGE;
}
