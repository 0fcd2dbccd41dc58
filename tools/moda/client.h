/* client.h — the moda CLI's side of a request/reply conversation with one service, and the
 * whole-file helpers the subcommands share (tools/moda/, used by cmd_*.c).
 *
 * A client_t is one REQ socket connected to one endpoint (ipc://, tcp://) with a reply
 * deadline. Requests go through msg_request (common/msg.h), so an absent service costs at
 * most timeout_ms and shows as ERR_TIMEOUT "no reply within N ms". Errors name the endpoint
 * (transport failures: "<endpoint>: <why>") or the service (a reply with a non-OK Status:
 * "<service>: <its message>"; a reply of the wrong kind: "<service> answered with X, expected Y").
 * Not thread-safe: a client belongs to one thread. Nothing here exits; only the two
 * command-line helpers (client_help_version, client_int_opt) print.
 */
#ifndef MODA_CLIENT_H
#define MODA_CLIENT_H

#include <stddef.h>

#include "cfg.h"
#include "err.h"
#include "msg.h"

typedef struct client {
    void *ctx;            /* the zmq context (owned when the client created it) */
    void *sock;           /* REQ socket, owned */
    const char *endpoint; /* borrowed: must outlive the client */
    const char *service;  /* borrowed: the name used in error messages ("registry") */
    int timeout_ms;       /* per request */
    msg_limits_t lim;     /* reply limits: msg_limits_default(); raise before the first call */
    int own_ctx;
} client_t;

/* Connect a REQ socket to `endpoint` on `ctx` (NULL: a context of its own, ended by
 * client_close). The sender name in headers is the caller's (msg_set_sender). Returns 0, or
 * ERR_MSG / ERR_INVALID (bad endpoint) with err filled; client_close is safe either way. */
int client_open(client_t *c, void *ctx, const char *endpoint, const char *service, int timeout_ms,
                err_t *err);
/* Close the socket (and the context when owned). Safe on a zeroed or closed client. */
void client_close(client_t *c);

/* One raw exchange: send env + parts (borrowed), wait for the reply. *reply as msg_request
 * (caller owns it and msg_frees it whatever the code). No check of the reply's body or
 * Status; err names only the failure ("no reply within 300 ms"). */
int client_request(client_t *c, const Moda__Envelope *env, const msg_part_t *parts, int nparts,
                   msg_t **reply, err_t *err);
/* client_request, then: a transport error is prefixed with the endpoint; a reply whose Status
 * is not OK is msg_err_code(status) "<service>: <message>"; a body other than `want` is
 * ERR_FORMAT "<service> answered with X, expected Y". 0 means *reply has body `want`. */
int client_call(client_t *c, const Moda__Envelope *env, const msg_part_t *parts, int nparts,
                Moda__Envelope__BodyCase want, msg_t **reply, err_t *err);
/* The Status of any reply body (the body message's `status` field), NULL when it has none. */
const Moda__Status *client_reply_status(const Moda__Envelope *e);

/* Health query: 0 and *reply with body health_reply (its Status and state are the caller's to
 * judge); else "<endpoint>: <why>" for transport errors, "<endpoint> answered with error C:
 * M" for an ErrorReply, "<endpoint> answered with X, not health_reply" otherwise. */
int client_health(client_t *c, msg_t **reply, err_t *err);

/* Whole file into *out (caller frees; a 1-byte buffer for an empty file). ERR_IO naming the
 * path ("opening P: ...", "P is not a regular file", "short read on P"), ERR_NOMEM. */
/* After cfg_parse of a subcommand: rc CFG_HELP prints the help, CFG_VERSION the version
 * (with the message schema), to stdout, and returns 1 (the command then exits 0);
 * any other rc returns 0. */
int client_help_version(const cfg_t *cfg, int rc);
/* The run directory of `moda up` / `moda status`: the configured value (the cfg key
 * `run_dir`) when not empty, else /tmp/moda-<uid> (short, for ipc:// socket paths). */
void client_run_dir(const cfg_t *cfg, char *out, size_t n);
/* A subcommand's integer option: v must be a whole decimal number in lo..hi; then *out = it
 * and 0. Otherwise prints "moda <cmd>: <opt> '<v>': need an integer lo..hi" to stderr and
 * returns -1 (the command then exits 2). v may be NULL (missing value). */
int client_int_opt(const char *cmd, const char *opt, const char *v, int lo, int hi, int *out);

int client_read_file(const char *path, unsigned char **out, size_t *len, err_t *err);
/* Create/truncate path with data. ERR_IO "creating P: ..." / "writing P: ...". */
int client_write_file(const char *path, const void *data, size_t len, err_t *err);
/* Write to P.tmp.<pid>, fsync, rename over P: readers see the old or the new file, never a
 * part. ERR_IO "creating T" / "writing T" / "saving P" with strerror; the temp is removed. */
int client_write_file_atomic(const char *path, const void *data, size_t len, err_t *err);

#endif
