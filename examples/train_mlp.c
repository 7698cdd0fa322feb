/* train_mlp.c — train a 784-512-512-10 MLP on Fashion-MNIST with the public API.
 *
 *   build/example_train_mlp [DATA_DIR] [EPOCHS]
 *
 * Builds the model layer by layer, trains it with Adam on the CPU or GPU (whichever the
 * trainer picks), evaluates on the test set after each epoch, and saves the parameters
 * as mlp.safetensors (loadable in PyTorch, SPEC §2). */
#include "anvil.h"

#include <stdio.h>
#include <stdlib.h>

#define CHECK(call)                                                           \
    do {                                                                      \
        anvil_status s_ = (call);                                             \
        if (s_ != ANVIL_OK) {                                                 \
            fprintf(stderr, "%s failed: %s\n", #call, anvil_last_error());    \
            goto done;                                                        \
        }                                                                     \
    } while (0)

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : ANVIL_DEFAULT_DATA_DIR;
    int epochs = argc > 2 ? atoi(argv[2]) : 1;
    int rc = 1;
    anvil_model *model = NULL;
    anvil_dataset *train = NULL, *test = NULL;
    anvil_trainer *trainer = NULL;
    anvil_batcher *batcher = NULL;

    /* The model: what nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), ...)
     * would be.  Unnamed layers take their index as state_dict prefix ("1.weight"). */
    const int64_t input[3] = {1, 28, 28};
    CHECK(anvil_model_create(&model, "mlp-example", 3, input));
    anvil_layer_desc flatten = anvil_layer_default(ANVIL_LAYER_FLATTEN);
    anvil_layer_desc relu = anvil_layer_default(ANVIL_LAYER_RELU);
    anvil_layer_desc fc = anvil_layer_default(ANVIL_LAYER_LINEAR);
    CHECK(anvil_model_add(model, &flatten));
    fc.out_features = 512;
    CHECK(anvil_model_add(model, &fc));
    CHECK(anvil_model_add(model, &relu));
    CHECK(anvil_model_add(model, &fc));
    CHECK(anvil_model_add(model, &relu));
    fc.out_features = 10;
    CHECK(anvil_model_add(model, &fc));
    printf("model: %lld parameters\n", (long long)anvil_model_param_count(model));

    CHECK(anvil_dataset_load_folder(&train, &test, dir));

    /* Cross-entropy and Adam(lr=1e-3) are the defaults; spelled out here. */
    anvil_trainer_config cfg = anvil_trainer_default_config();
    cfg.loss = ANVIL_LOSS_CROSS_ENTROPY;
    cfg.optimizer = anvil_optimizer_default_config(ANVIL_OPT_ADAM);
    cfg.optimizer.lr = 1e-3f;
    cfg.seed = 1;
    CHECK(anvil_trainer_create(&trainer, model, &cfg));
    printf("device: %s\n", anvil_trainer_device(trainer) == ANVIL_DEVICE_CUDA ? "cuda" : "cpu");

    const int batch_size = 128;
    CHECK(anvil_batcher_create(&batcher, train, batch_size, true, cfg.seed));
    for (int epoch = 1; epoch <= epochs; epoch++) {
        for (;;) {
            anvil_tensor *x = NULL, *y = NULL;
            bool end = false;
            CHECK(anvil_batcher_next(batcher, &x, &y, &end));
            if (end)
                break;
            anvil_status s = anvil_train_step(trainer, x, y); /* the loss stays on the device */
            anvil_tensor_release(x);
            anvil_tensor_release(y);
            CHECK(s);
        }
        float train_loss = 0.0f;
        CHECK(anvil_trainer_take_mean_loss(trainer, &train_loss));
        anvil_eval_result ev;
        CHECK(anvil_evaluate(trainer, test, batch_size, &ev));
        printf("epoch %d: train_loss %.4f  test_loss %.4f  test_accuracy %.4f\n", epoch,
               (double)train_loss, ev.mean_loss, ev.accuracy);
    }

    CHECK(anvil_trainer_save(trainer, "mlp.safetensors"));
    printf("saved mlp.safetensors\n");
    rc = 0;
done:
    anvil_batcher_free(batcher);
    anvil_trainer_free(trainer);
    anvil_model_free(model);
    anvil_dataset_free(train);
    anvil_dataset_free(test);
    return rc;
}
