/* msg.h — ZeroMQ sockets and moda messages (Envelope + binary parts), see docs/protocol.md.
 *
 * A moda message on the wire is
 *     [routing frames (ROUTER only)] [Envelope protobuf] [binary part 0] ... [part N-1]
 * The sender fills Envelope.header (schema version, message id, sender, send time, and the
 * size of every binary part); the receiver checks all of it before the caller sees the
 * message, so a handler only ever gets a well-formed Envelope with exactly the declared parts.
 *
 * Sockets are plain libzmq `void *` sockets created with explicit limits (msg_socket_new).
 * Errors from libzmq are translated here to ERR_MSG / ERR_TIMEOUT / ERR_INTERRUPTED with the
 * zmq_strerror text kept in err->msg. Nothing here prints or exits. Thread-safety: as libzmq —
 * a socket belongs to one thread; the message-id counter and sender name are process-wide.
 */
#ifndef MODA_MSG_H
#define MODA_MSG_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "moda.pb-c.h"

/* The schema version this build speaks (Header.schema_version). Receivers accept exactly the
 * versions in [MSG_SCHEMA_MIN, MSG_SCHEMA_VERSION]; anything else is ERR_VERSION. */
#define MSG_SCHEMA_VERSION 1u
#define MSG_SCHEMA_MIN 1u

/* Hard caps independent of configuration. */
#define MSG_MAX_PARTS 256            /* binary parts per message */
#define MSG_MAX_ROUTE 256            /* bytes of a ROUTER peer id (libzmq caps ids at 255) */
#define MSG_ENDPOINT_MAX 256

/* Socket options, all set explicitly by msg_socket_new. Defaults: msg_sockopt_default(). */
typedef struct msg_sockopt {
    int sndhwm;                 /* messages queued per peer before send blocks/drops (1000) */
    int rcvhwm;                 /* (1000) */
    int64_t max_frame_bytes;    /* ZMQ_MAXMSGSIZE: a bigger frame disconnects the peer at the
                                   transport (tcp/ipc only); -1 = unlimited (64 MiB) */
    int linger_ms;              /* ZMQ_LINGER: wait for unsent messages at close (0) */
    int reconnect_ivl_ms;       /* ZMQ_RECONNECT_IVL (100) */
    int reconnect_ivl_max_ms;   /* ZMQ_RECONNECT_IVL_MAX, exponential backoff cap (5000) */
    int sndtimeo_ms;            /* ZMQ_SNDTIMEO, -1 = block (-1) */
    int rcvtimeo_ms;            /* ZMQ_RCVTIMEO, -1 = block (-1) */
    int router_mandatory;       /* ROUTER only: unroutable reply -> error instead of drop (0) */
} msg_sockopt_t;

/* Application-level limits checked by msg_recv (all frames are still drained on error). */
typedef struct msg_limits {
    size_t max_envelope_bytes;  /* protobuf frame (1 MiB) */
    size_t max_total_bytes;     /* envelope + all parts (64 MiB) */
    int max_parts;              /* <= MSG_MAX_PARTS (MSG_MAX_PARTS) */
} msg_limits_t;

void msg_sockopt_default(msg_sockopt_t *o);
void msg_limits_default(msg_limits_t *l);

/* A binary part: borrowed pointer + size. */
typedef struct msg_part {
    const void *data;
    size_t size;
} msg_part_t;

/* ROUTER peer address, captured by msg_recv and echoed by msg_send_to. `delimiter` is set
 * when the peer is a REQ socket (an empty frame follows the id). */
typedef struct msg_route {
    unsigned char id[MSG_MAX_ROUTE];
    size_t id_len;
    int delimiter;
} msg_route_t;

/* A received message. Caller owns it; free with msg_free (always, whatever msg_recv
 * returned, whenever *out is not NULL). `env` is NULL when the Envelope could not be
 * decoded; parts[i].data is valid until msg_free. */
typedef struct msg {
    Moda__Envelope *env;
    msg_part_t *parts;
    int nparts;
    int has_route;
    msg_route_t route;
    int has_topic;
    char topic[MSG_MAX_ROUTE]; /* PUB/SUB topic frame (MSG_TOPIC), NUL-terminated */
    uint64_t request_id;  /* header.message_id when the header decoded, else 0 */
    size_t wire_bytes;    /* bytes of all application frames */
    int nframes;          /* application frames received (envelope + parts) */
    void *priv_;          /* zmq_msg_t storage */
} msg_t;

/* Process-wide sender name put in every Header ("ingest", "moda-cli"). Copied (<= 63 chars). */
void msg_set_sender(const char *name);
const char *msg_sender(void);

/* Microseconds since the Unix epoch (wall clock). */
int64_t msg_now_us(void);

/* Create a socket of `type` (ZMQ_ROUTER, ZMQ_PULL, ...) on `ctx` with every option of `o`
 * set (NULL: defaults). Returns the socket (caller owns; close with msg_socket_close) or
 * NULL with err filled. */
void *msg_socket_new(void *ctx, int type, const msg_sockopt_t *o, err_t *err);
/* zmq_close with linger as set at creation; NULLs *sock. */
void msg_socket_close(void **sock);

/* Validate an endpoint ("tcp://host:port", "ipc:///path" with path < 100 chars,
 * "inproc://name"). Returns 0 or ERR_INVALID naming the problem. */
int msg_endpoint_check(const char *endpoint, err_t *err);
int msg_bind(void *sock, const char *endpoint, err_t *err);
int msg_connect(void *sock, const char *endpoint, err_t *err);

/* Flags. MSG_DONTWAIT: never block (send: nothing sent, ERR_TIMEOUT; recv: nothing there).
 * MSG_TOPIC (recv): the first frame is a PUB/SUB topic, stored in msg_t.topic. */
enum { MSG_DONTWAIT = 1, MSG_TOPIC = 2 };

/* Send `env` followed by `nparts` binary parts (data copied; borrowed during the call).
 * `env` is borrowed and not modified: the header that goes out is a fresh one (schema
 * version, next message id, sender, now, part sizes) that keeps only env->header->reply_to.
 * Returns 0, ERR_TIMEOUT (SNDTIMEO expired, or would block with MSG_DONTWAIT — nothing sent),
 * ERR_INTERRUPTED, ERR_RANGE (too many parts), or ERR_MSG with the zmq text. */
int msg_send(void *sock, const Moda__Envelope *env, const msg_part_t *parts, int nparts,
             err_t *err);
/* As msg_send, with ROUTER routing frames first (route may be NULL) and flags. */
int msg_send_to(void *sock, const msg_route_t *route, const Moda__Envelope *env,
                const msg_part_t *parts, int nparts, int flags, err_t *err);
/* PUB side: send a topic frame ("result.cam-7", < MSG_MAX_ROUTE bytes) then the message.
 * Never blocks (PUB drops at the high-water mark). Same codes as msg_send. */
int msg_publish(void *sock, const char *topic, const Moda__Envelope *env, const msg_part_t *parts,
                int nparts, err_t *err);
/* Send a reply to `req`: sets header.reply_to = req->request_id and echoes req's route. */
int msg_reply(void *sock, const msg_t *req, const Moda__Envelope *env, const msg_part_t *parts,
              int nparts, err_t *err);
/* Reply with ErrorReply{status{code,text}}; code is a ERR_* code mapped by msg_status_code. */
int msg_reply_error(void *sock, const msg_t *req, int code, const char *text, err_t *err);

/* Receive one whole message. If `is_router`, the first frame is taken as the peer id (and
 * a following empty frame as the REQ delimiter). `lim` NULL = defaults. flags: MSG_DONTWAIT,
 * MSG_TOPIC (SUB sockets: first frame is the topic; a topic too long is ERR_FORMAT).
 * On return *out is NULL when nothing was received (ERR_TIMEOUT, ERR_INTERRUPTED, ERR_MSG),
 * else a message the caller must msg_free — also when the code is an error, so a ROUTER/REP
 * receiver can still reply to the route. Codes after a message was read:
 *   0              env decoded, schema known, body set, parts match header.part_sizes
 *   ERR_FORMAT     envelope is not valid protobuf, no header, or parts truncated/padded
 *                  (fewer/more frames or other sizes than header.part_sizes declares)
 *   ERR_RANGE      envelope > max_envelope_bytes, total > max_total_bytes, too many parts
 *   ERR_VERSION    header.schema_version outside [MSG_SCHEMA_MIN, MSG_SCHEMA_VERSION]
 *   ERR_UNSUPPORTED body not set (unknown body from a newer schema, or empty)
 * All frames of the message are always consumed. */
int msg_recv(void *sock, int is_router, const msg_limits_t *lim, int flags, msg_t **out,
             err_t *err);
void msg_free(msg_t **m);

/* ERR_* <-> StatusCode. */
Moda__StatusCode msg_status_code(int err_code);
int msg_err_code(Moda__StatusCode code);
/* Name of a StatusCode ("STATUS_FORMAT"), "STATUS_UNKNOWN" when out of range. */
const char *msg_status_name(Moda__StatusCode code);
/* Name of an Envelope body case ("health_request"), "none" when not set, "unknown" else. */
const char *msg_body_name(Moda__Envelope__BodyCase c);

/* One request/reply exchange on a REQ or DEALER socket with a deadline: sends env (+parts)
 * and waits up to timeout_ms for a reply whose header.reply_to matches. *reply as msg_recv.
 * Returns 0, ERR_TIMEOUT, or an msg_send/msg_recv error. */
int msg_request(void *sock, const Moda__Envelope *env, const msg_part_t *parts, int nparts,
                int timeout_ms, const msg_limits_t *lim, msg_t **reply, err_t *err);

#endif
