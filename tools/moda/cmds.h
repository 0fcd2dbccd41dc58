/* cmds.h — the moda tool's subcommands. Each lives in its own cmd_<name>.c and is listed
 * once in the table in main.c. A command returns the process exit status (0 ok, 2 usage,
 * 1 failure) and prints its own errors; argv[0] is the subcommand name. */
#ifndef MODA_CMDS_H
#define MODA_CMDS_H

#include <stddef.h>
#include <stdint.h>

#include "sam.h"

typedef struct moda_cmd {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv);
} moda_cmd_t;

/* add one declaration per command here (alphabetical) */
int cmd_bench(int argc, char **argv);
int cmd_bench_train(int argc, char **argv); /* `moda bench train`, called by cmd_bench */
int cmd_bench_pipeline(int argc, char **argv); /* `moda bench pipeline`, called by cmd_bench */
int cmd_clbench(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_health(int argc, char **argv);
int cmd_label(int argc, char **argv);
int cmd_registry(int argc, char **argv);
int cmd_segment(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_up(int argc, char **argv);

/* seg_bank.c: segment img with a bank's adapter (`moda segment --bank`): loads the bank,
 * encodes img (with the selector taps when the selector chooses), picks the domain with
 * bankrun.h and runs its adapter. p NULL = no prompt. domain NULL: the only domain or the
 * selector's choice. mask: h·w bytes 0/255 (caller-allocated); chosen receives the domain
 * name, *prob the selector probability and *how how it was chosen (BANKRUN_* of bankrun.h:
 * selected, the only domain, forced). cuda != 0: the encoder (enc_cuda, unless the
 * selector needs the CPU encoder's taps), the decoder and the adapter on CUDA device 0
 * (bankrun_use_cuda). */
int seg_bank_predict(sam_t *sam, const image_t *img, const sam_prompt_t *p,
                     const char *bank_path, const char *domain, int cuda, uint8_t *mask,
                     char *chosen, size_t chosen_n, float *prob, int *how, err_t *err);

#endif
