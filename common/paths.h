/* paths.h — where moda finds its files when the user does not say.
 *
 * The default model is looked up in this order:
 *   1. $MODA_MODEL (used as given, even if the file does not exist: the open then fails
 *      with that path in the message);
 *   2. <dir of /proc/self/exe>/../../.deps/models/mobile_sam.safetensors (a binary in
 *      <repo>/build-xyz/bin/ finds <repo>/.deps), when that file exists;
 *   3. ./.deps/models/mobile_sam.safetensors (relative to the working directory).
 */
#ifndef MODA_PATHS_H
#define MODA_PATHS_H

#include <stddef.h>

#include "err.h"

#define PATHS_MODEL_REL ".deps/models/mobile_sam.safetensors"

/* Writes the default model path into buf (n bytes). 0, or ERR_RANGE when it does not fit. */
int paths_default_model(char *buf, size_t n);

/* Directory of the running executable into buf (no trailing slash). 0, ERR_IO or ERR_RANGE. */
int paths_exe_dir(char *buf, size_t n);

/* Reads a whole regular file. *out caller owns (free; never NULL on success, even for an
 * empty file). ERR_IO (names the file), ERR_NOMEM. */
int paths_read_file(const char *path, unsigned char **out, size_t *len, err_t *err);

#endif
