/* cudnn_check.h — CK(call): a bench probe's cuDNN call, or the failing call's name and
 * cuDNN's message and exit(1) (the probes have nothing to clean up). */
#ifndef ANVIL_BENCH_CUDNN_CHECK_H
#define ANVIL_BENCH_CUDNN_CHECK_H

#include <cudnn.h>

#include <stdio.h>
#include <stdlib.h>

#define CK(x)                                                                                  \
    do {                                                                                       \
        cudnnStatus_t s_ = (x);                                                                \
        if (s_ != CUDNN_STATUS_SUCCESS) {                                                      \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudnnGetErrorString(s_)); \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

#endif
