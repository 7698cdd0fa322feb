/* train_schedule.c — parameter groups, a warm-up + cosine learning-rate schedule,
 * gradient clipping and a resumable checkpoint, on Fashion-MNIST.
 *
 *   build/example_train_schedule [DATA_DIR] [CHECKPOINT]
 *
 * Trains the built-in mlp for 2 epochs with SGD (momentum 0.9, weight decay 5e-4 on the
 * weights only), clipping the gradient norm at 1, then saves a checkpoint; run it again
 * with the same arguments and it resumes from the checkpoint for 2 more epochs. */
#include <stdio.h>
#include <stdlib.h>

#include "anvil.h"

#define TRY(call)                                                                              \
    do {                                                                                       \
        anvil_status s_ = (call);                                                              \
        if (s_ != ANVIL_OK) {                                                                  \
            fprintf(stderr, "%s: %s\n", #call, anvil_last_error());                            \
            return 1;                                                                          \
        }                                                                                      \
    } while (0)

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : ANVIL_DEFAULT_DATA_DIR;
    const char *ck = argc > 2 ? argv[2] : "example-checkpoint.safetensors";
    const int batch = 128, epochs = 2;
    anvil_dataset *train, *test;
    TRY(anvil_dataset_load_folder(&train, &test, dir));
    anvil_model *m;
    TRY(anvil_model_builtin(&m, "mlp"));

    anvil_trainer_config cfg = anvil_trainer_default_config();
    cfg.optimizer = anvil_optimizer_default_config(ANVIL_OPT_SGD);
    cfg.optimizer.lr = 0.05f;
    cfg.optimizer.momentum = 0.9f;
    cfg.optimizer.weight_decay = 5e-4f;
    /* group 1: biases (every 1-D parameter), no weight decay */
    anvil_optimizer_config no_decay = cfg.optimizer;
    no_decay.weight_decay = 0.0f;
    anvil_param_group pg = anvil_param_group_default(NULL, true, &no_decay);
    cfg.n_param_groups = 1;
    cfg.param_groups = &pg;
    /* per epoch: 1 epoch of linear warm-up, then cosine annealing over 3 epochs */
    int64_t per_epoch = (anvil_dataset_size(train) + batch - 1) / batch;
    cfg.schedule = anvil_schedule_default_config(ANVIL_SCHED_COSINE);
    cfg.schedule.steps_per_epoch = per_epoch;
    cfg.schedule.warmup = 1;
    cfg.schedule.t_max = 3;
    cfg.clip_grad_norm = 1.0f;

    anvil_trainer *t;
    TRY(anvil_trainer_create(&t, m, &cfg));
    TRY(anvil_trainer_attach_data(t, train, batch, true, cfg.seed));
    FILE *f = fopen(ck, "rb");
    if (f) {
        fclose(f);
        TRY(anvil_trainer_load_checkpoint(t, NULL, ck));
        printf("resumed from %s at step %lld\n", ck, (long long)anvil_trainer_step_count(t));
    }
    for (int e = 0; e < epochs; e++) {
        float lr0;
        TRY(anvil_trainer_lr(t, 0, &lr0));
        bool done = false;
        while (!done)
            TRY(anvil_train_step_resident(t, &done));
        float loss, norm;
        anvil_eval_result r;
        TRY(anvil_trainer_take_mean_loss(t, &loss));
        TRY(anvil_trainer_last_grad_norm(t, &norm));
        TRY(anvil_evaluate(t, test, 1000, &r));
        printf("step %lld: lr %.4f  train loss %.4f  last gradient norm %.3f  test accuracy %.4f\n",
               (long long)anvil_trainer_step_count(t), (double)lr0, (double)loss, (double)norm, r.accuracy);
    }
    TRY(anvil_trainer_save_checkpoint(t, NULL, ck));
    printf("checkpoint: %s\n", ck);
    anvil_trainer_free(t);
    anvil_model_free(m);
    anvil_dataset_free(train);
    anvil_dataset_free(test);
    return 0;
}
