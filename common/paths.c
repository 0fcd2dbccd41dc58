/* paths.c — default file locations (see paths.h). */
#include "paths.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"

static int put(char *buf, size_t n, const char *s)
{
    int w = snprintf(buf, n, "%s", s);
    return (w < 0 || (size_t)w >= n) ? ERR_RANGE : 0;
}

int paths_exe_dir(char *buf, size_t n)
{
    char exe[4096];
    ssize_t l = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (l <= 0) return ERR_IO;
    exe[l] = 0;
    char *slash = strrchr(exe, '/');
    if (!slash) return ERR_IO;
    *slash = 0;
    return put(buf, n, exe[0] ? exe : "/");
}

int paths_default_model(char *buf, size_t n)
{
    const char *env = getenv("MODA_MODEL");
    if (env && *env) return put(buf, n, env);
    char dir[4096], cand[4200];
    if (!paths_exe_dir(dir, sizeof dir)) {
        snprintf(cand, sizeof cand, "%s/../../%s", dir, PATHS_MODEL_REL);
        if (access(cand, R_OK) == 0) {
            char *real = realpath(cand, NULL);
            int rc = put(buf, n, real ? real : cand);
            free(real);
            return rc;
        }
    }
    return put(buf, n, "./" PATHS_MODEL_REL);
}

int paths_read_file(const char *path, unsigned char **out, size_t *len, err_t *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) return err_errno(err, ERR_IO, errno, "opening %s", path);
    struct stat st;
    if (fstat(fileno(f), &st) || !S_ISREG(st.st_mode)) {
        fclose(f);
        return err_set(err, ERR_IO, "%s is not a regular file", path);
    }
    *len = (size_t)st.st_size;
    *out = malloc(*len ? *len : 1);
    if (!*out) {
        fclose(f);
        return err_set(err, ERR_NOMEM, "out of memory for %s", path);
    }
    size_t got = fread(*out, 1, *len, f);
    fclose(f);
    if (got != *len) {
        free(*out);
        *out = NULL;
        return err_set(err, ERR_IO, "short read on %s", path);
    }
    return 0;
}
