/* svc.h — the service loop every moda service runs (see docs/protocol.md).
 *
 * A svc_t owns one zmq context, a ROUTER control socket that answers HealthRequest (and hands
 * any other request to an optional control handler), and a zmq_poll loop over sockets that
 * later code registers with a handler callback. SIGTERM/SIGINT set a flag and write to a
 * self-pipe that the loop polls: no work happens in the signal handler, and svc_run returns 0
 * after the current handler finishes.
 *
 * Bad input never stops the loop: svc_recv (use it in every handler) receives one message,
 * and on a malformed/oversized/truncated/unknown-version message logs one key=value line
 * (event=bad_msg), bumps msgs_bad, replies with ErrorReply when the socket is ROUTER/REP and
 * drops otherwise. Counters (name -> uint64) are reported in HealthReply.
 * Single-threaded: every function except svc_stop must be called from the loop's thread.
 */
#ifndef MODA_SVC_H
#define MODA_SVC_H

#include <stdint.h>

#include "cfg.h"
#include "err.h"
#include "msg.h"

typedef struct svc svc_t;

typedef struct svc_opts {
    const char *name;             /* "ingest" (borrowed; used in logs, Health, Header.sender) */
    const char *control_endpoint; /* bind address of the control/health socket */
    msg_sockopt_t sockopt;        /* used for the control socket and by svc_socket */
    msg_limits_t limits;          /* used by svc_recv */
    int install_signals;          /* catch SIGTERM/SIGINT (1 in services, 0 in tests) */
} svc_opts_t;

/* Defaults: sockopt/limits defaults, install_signals = 1; name and endpoint must be set. */
void svc_opts_default(svc_opts_t *o);

/* Common config keys of every service, to put first in a program's cfg schema:
 *   bind (endpoint, default `def_bind`), log_level, hwm, linger_ms, reconnect_ivl_ms,
 *   reconnect_ivl_max_ms, max_frame_bytes, max_envelope_bytes, max_msg_bytes.          */
#define SVC_CFG_KEYS(def_bind)                                                                 \
    {"bind", CFG_ENDPOINT, def_bind, 0, 0, "control/health socket endpoint (ROUTER, bound)"},  \
    {"log_level", CFG_STRING, "info", 0, 0, "debug|info|warn|error|off"},                      \
    {"hwm", CFG_INT, "1000", 1, 1e7, "send/receive high-water mark, messages"},                \
    {"linger_ms", CFG_INT, "0", -1, 600000, "ZMQ_LINGER for unsent messages at close"},        \
    {"reconnect_ivl_ms", CFG_INT, "100", 1, 600000, "first reconnect interval"},               \
    {"reconnect_ivl_max_ms", CFG_INT, "5000", 0, 3600000, "reconnect backoff cap"},            \
    {"max_frame_bytes", CFG_INT, "67108864", 1024, 4294967296.0,                              \
     "ZMQ_MAXMSGSIZE: bigger frames drop the peer connection"},                                \
    {"max_envelope_bytes", CFG_INT, "1048576", 64, 67108864, "limit of the protobuf frame"},   \
    {"max_msg_bytes", CFG_INT, "67108864", 1024, 4294967296.0, "limit of a whole message"}

/* Fill o from the SVC_CFG_KEYS values of cfg (name is borrowed into o->name) and set the log
 * level. Returns 0 or ERR_CONFIG (bad log_level). */
int svc_opts_from_cfg(svc_opts_t *o, const char *name, const cfg_t *cfg, err_t *err);

/* Create the context, bind the control socket; sets the log name (log_set_name) and the
 * message sender (msg_set_sender) to o->name, which must outlive the process's logging.
 * Caller owns result (svc_destroy);
 * NULL + err on failure (bad endpoint, address in use). */
svc_t *svc_new(const svc_opts_t *o, err_t *err);
/* Close every registered socket, the control socket and the context; NULLs *s. */
void svc_destroy(svc_t **s);

void *svc_ctx(svc_t *s);
const svc_opts_t *svc_opts(const svc_t *s);
/* The endpoint the control socket is bound to (resolved: tcp port * becomes the real port). */
const char *svc_control_endpoint(const svc_t *s);

/* Create a socket on the service context with the service's sockopt. Caller owns it until
 * it is passed to svc_add_socket. NULL + err on failure. */
void *svc_socket(svc_t *s, int type, err_t *err);

/* msg_bind, and remember an ipc socket file the bind created so svc_destroy removes it
 * (libzmq leaves it behind; a file re-bound meanwhile by a newer process is left alone).
 * Use it for every socket a service binds. */
int svc_bind(svc_t *s, void *sock, const char *endpoint, err_t *err);

/* Called when `sock` is readable. Return 0 to keep serving; a negative code stops svc_run
 * with that code (only for fatal conditions — bad input must return 0). */
typedef int (*svc_handler_fn)(svc_t *s, void *sock, void *user);

/* Register sock for POLLIN with handler fn. Takes ownership of sock (closed by svc_destroy).
 * `name` (borrowed, a literal) names the socket in logs and counters. Up to 32 sockets. */
int svc_add_socket(svc_t *s, void *sock, const char *name, svc_handler_fn fn, void *user,
                   err_t *err);

/* Called every `interval_ms` (>= 1) from the loop. Same return rule as svc_handler_fn.
 * Up to 8 timers. */
typedef int (*svc_timer_fn)(svc_t *s, void *user);
int svc_add_timer(svc_t *s, int interval_ms, svc_timer_fn fn, void *user, err_t *err);

/* Handler for control-socket requests other than Health. `req` is valid (decoded, body set).
 * Return 0 after sending exactly one reply with msg_reply(sock, req, ...); ERR_UNSUPPORTED
 * (nothing sent) to let svc answer ErrorReply STATUS_UNSUPPORTED; other negative codes stop
 * svc_run like a socket handler. Without a handler every other request gets that ErrorReply. */
typedef int (*svc_control_fn)(svc_t *s, void *sock, const msg_t *req, void *user);
void svc_set_control_handler(svc_t *s, svc_control_fn fn, void *user);

/* Receive one message on `sock` named `name`. Returns 0 with *out a valid message (caller
 * frees with msg_free), or a nonzero code with *out NULL: ERR_TIMEOUT (nothing there) or the
 * validation code of a bad message, which has already been logged, counted (msgs_bad, and
 * bad_<name>), and answered with ErrorReply if sock is ROUTER or REP. Counts msgs_in.
 * On a REP socket a handler that got 0 must send exactly one reply (REP's state machine).
 * SUB sockets: the topic frame is taken off into (*out)->topic. */
int svc_recv(svc_t *s, void *sock, const char *name, msg_t **out);

/* Counters. svc_counter returns a stable pointer (created at 0 on first use; up to 64
 * names of <= 47 chars, beyond that a shared overflow slot "counters_overflow"). */
uint64_t *svc_counter(svc_t *s, const char *name);
void svc_count(svc_t *s, const char *name, uint64_t delta);
uint64_t svc_counter_get(svc_t *s, const char *name);

/* Health state and last error (also logged at error level by svc_error). */
void svc_set_state(svc_t *s, Moda__ServiceState st);
void svc_error(svc_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Fill a HealthReply for this service. Strings and counters point into s and into `store`
 * (arrays sized by the caller: at least svc_ncounters(s) entries each); valid until the next
 * call that changes s. */
int svc_ncounters(const svc_t *s);
void svc_health(svc_t *s, Moda__HealthReply *r, Moda__Status *st, Moda__Counter *store,
                Moda__Counter **ptrs);

/* Run the loop until svc_stop, a signal, or a handler error. Returns 0 after a graceful stop,
 * else the handler's code (err filled). State goes STARTING -> SERVING -> STOPPING. */
int svc_run(svc_t *s, err_t *err);
/* Ask the loop to stop after the current handler. Async-signal-safe and thread-safe. */
void svc_stop(svc_t *s);

#endif
