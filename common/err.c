/* err.c — error codes and messages (see err.h). */
#include "err.h"

#include <string.h>

const char *err_str(int code)
{
    switch (code) {
    case ERR_OK: return "ok";
    case ERR_INVALID: return "invalid argument";
    case ERR_NOMEM: return "out of memory";
    case ERR_IO: return "i/o error";
    case ERR_FORMAT: return "bad format";
    case ERR_NOTFOUND: return "not found";
    case ERR_RANGE: return "out of range";
    case ERR_VERSION: return "version mismatch";
    case ERR_TIMEOUT: return "timed out";
    case ERR_UNSUPPORTED: return "unsupported";
    case ERR_STATE: return "bad state";
    case ERR_DB: return "database error";
    case ERR_MSG: return "messaging error";
    case ERR_DEVICE: return "device error";
    case ERR_INTERRUPTED: return "interrupted";
    case ERR_CONFIG: return "configuration error";
    case ERR_EXISTS: return "already exists";
    default: return "unknown error";
    }
}

int err_set(err_t *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

int err_errno(err_t *err, int code, int errno_value, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < sizeof err->msg)
            snprintf(err->msg + n, sizeof err->msg - (size_t)n, ": %s", strerror(errno_value));
        err->code = code;
    }
    return code;
}

int err_wrap(err_t *err, const char *fmt, ...)
{
    if (!err) return ERR_INVALID;
    char prefix[ERR_MSG_MAX], old[ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    snprintf(err->msg, sizeof err->msg, "%s: %s", prefix, old);
    return err->code;
}

void err_clear(err_t *err)
{
    if (err) {
        err->code = 0;
        err->msg[0] = '\0';
    }
}

int err_exit_status(int code)
{
    if (code == 0) return 0;
    if (code == ERR_INVALID || code == ERR_CONFIG || code == ERR_RANGE) return 2;
    return 1;
}
