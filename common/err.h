/* err.h — error codes and messages for every moda module.
 *
 * Convention (docs: ../shared/design/STYLE.md): a fallible function returns 0 or a
 * negative ERR_* code and, if its `err_t *err` argument is not NULL, fills it with a
 * one-line message written at the failure site. Constructors return NULL and fill err.
 * Library code never prints and never exits; main() logs err.msg and picks the exit code.
 * Codes live in a private range so they never collide with errno or library codes;
 * foreign codes (errno, LMDB, ZeroMQ, CUDA) are translated at the module edge with the
 * library's own text kept in the message.
 */
#ifndef MODA_ERR_H
#define MODA_ERR_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

enum {
    ERR_OK = 0,
    ERR_INVALID = -30001,  /* bad argument or bad input data */
    ERR_NOMEM = -30002,    /* allocation failed */
    ERR_IO = -30003,       /* file or socket I/O failed (errno text in message) */
    ERR_FORMAT = -30004,   /* a file or message does not parse */
    ERR_NOTFOUND = -30005, /* a named thing (file, tensor, key, version) is absent */
    ERR_RANGE = -30006,    /* a value or size is outside what is allowed */
    ERR_VERSION = -30007,  /* schema / format / base-model version mismatch */
    ERR_TIMEOUT = -30008,  /* no answer in time */
    ERR_UNSUPPORTED = -30009, /* valid but not supported (dtype, device, image kind) */
    ERR_STATE = -30010,    /* operation not allowed in the current state */
    ERR_DB = -30011,       /* LMDB error (LMDB text in message) */
    ERR_MSG = -30012,      /* ZeroMQ error (zmq text in message) */
    ERR_DEVICE = -30013,   /* CUDA / device error */
    ERR_INTERRUPTED = -30014, /* stopped by a signal */
    ERR_CONFIG = -30015,   /* configuration error (names key and line) */
    ERR_EXISTS = -30016,   /* already exists / conflict */
};

#define ERR_MSG_MAX 512

typedef struct err {
    int code;               /* last ERR_* code, 0 when none */
    char msg[ERR_MSG_MAX];  /* one line, no trailing newline */
} err_t;

/* Short constant name of a code ("invalid argument", ...). Never NULL. */
const char *err_str(int code);

/* Fill err (may be NULL) and return code, so call sites read
 *     return err_set(err, ERR_INVALID, "bad point '%s'", s);          */
int err_set(err_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Like err_set, appending ": strerror(errno_value)". */
int err_errno(err_t *err, int code, int errno_value, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Prefix an existing message with context: "loading model: <old message>". Keeps code. */
int err_wrap(err_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Reset to no error. */
void err_clear(err_t *err);

/* Process exit status for a code: 0 ok, 2 usage/config/invalid input, 1 otherwise. */
int err_exit_status(int code);

/* Programmer errors only (never bad input): always on, prints file:line and aborts. */
#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "CHECK failed: %s at %s:%d\n", #cond, __FILE__, __LINE__);     \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

#endif
