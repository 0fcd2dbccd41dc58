/* test_paths.c — default model lookup: $MODA_MODEL first, then next to the binary, then
 * ./.deps (unit). The binary-relative case is checked with a temporary model file. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "paths.h"
#include "expect.h"

int main(int argc, char **argv)
{
    (void)argc;
    char buf[4096], dir[4096];
    setenv("MODA_MODEL", "/some/where/model.safetensors", 1);
    EXPECT(paths_default_model(buf, sizeof buf) == 0 && !strcmp(buf, "/some/where/model.safetensors"));
    EXPECT(paths_default_model(buf, 10) == ERR_RANGE);
    unsetenv("MODA_MODEL");

    /* exe dir is the folder of argv[0] */
    char *self = realpath(argv[0], NULL);
    EXPECT(self && paths_exe_dir(dir, sizeof dir) == 0);
    if (self) {
        *strrchr(self, '/') = 0;
        EXPECT(!strcmp(dir, self));
    }
    free(self);

    char cand[8192];
    snprintf(cand, sizeof cand, "%s/../../" PATHS_MODEL_REL, dir);
    EXPECT(paths_default_model(buf, sizeof buf) == 0);
    if (access(cand, R_OK) == 0) {
        char *real = realpath(cand, NULL);
        EXPECT(real && !strcmp(buf, real));
        free(real);
    } else {
        EXPECT(!strcmp(buf, "./" PATHS_MODEL_REL));
    }
    printf("default model: %s\n", buf);
    if (expect_failures) return 1;
    printf("test_paths: ok\n");
    return 0;
}
