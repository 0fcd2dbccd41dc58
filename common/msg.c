/* msg.c — ZeroMQ sockets and moda Envelope messages (see msg.h, docs/protocol.md).
 *
 * Invariants: msg_recv always drains every frame of a multipart message, so one bad message
 * never desynchronises the next; protobuf unpack happens in msg_recv and the matching free
 * in msg_free; zmq errors become ERR_* codes here, with zmq_strerror text.
 */
#include "msg.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

static atomic_uint_fast64_t g_next_id = 1;
static char g_sender[64] = "moda";

void msg_set_sender(const char *name)
{
    snprintf(g_sender, sizeof g_sender, "%s", name ? name : "");
}

const char *msg_sender(void)
{
    return g_sender;
}

int64_t msg_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void msg_sockopt_default(msg_sockopt_t *o)
{
    o->sndhwm = 1000;
    o->rcvhwm = 1000;
    o->max_frame_bytes = 64ll << 20;
    o->linger_ms = 0;
    o->reconnect_ivl_ms = 100;
    o->reconnect_ivl_max_ms = 5000;
    o->sndtimeo_ms = -1;
    o->rcvtimeo_ms = -1;
    o->router_mandatory = 0;
}

void msg_limits_default(msg_limits_t *l)
{
    l->max_envelope_bytes = 1u << 20;
    l->max_total_bytes = 64u << 20;
    l->max_parts = MSG_MAX_PARTS;
}

/* Translate the current zmq errno. */
static int zerr(err_t *err, const char *what)
{
    int e = zmq_errno();
    int code = e == EAGAIN ? ERR_TIMEOUT : e == EINTR ? ERR_INTERRUPTED : ERR_MSG;
    return err_set(err, code, "%s: %s", what, zmq_strerror(e));
}

static int setopt_int(void *s, int opt, int v, const char *name, err_t *err)
{
    if (zmq_setsockopt(s, opt, &v, sizeof v) != 0) {
        int e = zmq_errno();
        return err_set(err, ERR_MSG, "setting %s=%d: %s", name, v, zmq_strerror(e));
    }
    return 0;
}

void *msg_socket_new(void *ctx, int type, const msg_sockopt_t *o, err_t *err)
{
    msg_sockopt_t d;
    if (!o) {
        msg_sockopt_default(&d);
        o = &d;
    }
    if (!ctx) {
        err_set(err, ERR_INVALID, "msg_socket_new: no zmq context");
        return NULL;
    }
    void *s = zmq_socket(ctx, type);
    if (!s) {
        zerr(err, "creating zmq socket");
        return NULL;
    }
    int64_t maxmsg = o->max_frame_bytes;
    int rc = setopt_int(s, ZMQ_SNDHWM, o->sndhwm, "ZMQ_SNDHWM", err);
    if (!rc) rc = setopt_int(s, ZMQ_RCVHWM, o->rcvhwm, "ZMQ_RCVHWM", err);
    if (!rc) rc = setopt_int(s, ZMQ_LINGER, o->linger_ms, "ZMQ_LINGER", err);
    if (!rc) rc = setopt_int(s, ZMQ_RECONNECT_IVL, o->reconnect_ivl_ms, "ZMQ_RECONNECT_IVL", err);
    if (!rc)
        rc = setopt_int(s, ZMQ_RECONNECT_IVL_MAX, o->reconnect_ivl_max_ms, "ZMQ_RECONNECT_IVL_MAX",
                        err);
    if (!rc) rc = setopt_int(s, ZMQ_SNDTIMEO, o->sndtimeo_ms, "ZMQ_SNDTIMEO", err);
    if (!rc) rc = setopt_int(s, ZMQ_RCVTIMEO, o->rcvtimeo_ms, "ZMQ_RCVTIMEO", err);
    if (!rc && zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) != 0)
        rc = err_set(err, ERR_MSG, "setting ZMQ_MAXMSGSIZE=%lld: %s", (long long)maxmsg,
                     zmq_strerror(zmq_errno()));
    if (!rc && type == ZMQ_ROUTER && o->router_mandatory)
        rc = setopt_int(s, ZMQ_ROUTER_MANDATORY, 1, "ZMQ_ROUTER_MANDATORY", err);
    if (rc) {
        zmq_close(s);
        return NULL;
    }
    return s;
}

void msg_socket_close(void **sock)
{
    if (sock && *sock) {
        zmq_close(*sock);
        *sock = NULL;
    }
}

int msg_endpoint_check(const char *ep, err_t *err)
{
    if (!ep || !*ep) return err_set(err, ERR_INVALID, "empty endpoint");
    if (strlen(ep) >= MSG_ENDPOINT_MAX)
        return err_set(err, ERR_INVALID, "endpoint '%.40s...' longer than %d chars", ep,
                       MSG_ENDPOINT_MAX - 1);
    if (!strncmp(ep, "ipc://", 6)) {
        size_t n = strlen(ep + 6);
        /* sockaddr_un.sun_path is 108 bytes on Linux; keep a margin for "@" and NUL. */
        if (n == 0 || n >= 100)
            return err_set(err, ERR_INVALID,
                           "endpoint '%s': ipc path must be 1..99 characters (has %zu)", ep, n);
        return 0;
    }
    if (!strncmp(ep, "inproc://", 9)) {
        if (!ep[9]) return err_set(err, ERR_INVALID, "endpoint '%s': empty inproc name", ep);
        return 0;
    }
    if (!strncmp(ep, "tcp://", 6)) {
        const char *colon = strrchr(ep + 6, ':');
        if (!colon || colon == ep + 6)
            return err_set(err, ERR_INVALID, "endpoint '%s': expected tcp://HOST:PORT", ep);
        const char *port = colon + 1;
        if (!strcmp(port, "*")) return 0;
        char *end;
        errno = 0;
        long p = strtol(port, &end, 10);
        if (!*port || *end || errno || p < 1 || p > 65535)
            return err_set(err, ERR_INVALID, "endpoint '%s': port '%s' is not 1..65535 or *", ep,
                           port);
        return 0;
    }
    return err_set(err, ERR_INVALID, "endpoint '%s': transport must be tcp://, ipc:// or inproc://",
                   ep);
}

int msg_bind(void *sock, const char *endpoint, err_t *err)
{
    int rc = msg_endpoint_check(endpoint, err);
    if (rc) return rc;
    if (zmq_bind(sock, endpoint) != 0) {
        int e = zmq_errno();
        return err_set(err, ERR_MSG, "bind %s: %s", endpoint, zmq_strerror(e));
    }
    return 0;
}

int msg_connect(void *sock, const char *endpoint, err_t *err)
{
    int rc = msg_endpoint_check(endpoint, err);
    if (rc) return rc;
    if (zmq_connect(sock, endpoint) != 0) {
        int e = zmq_errno();
        return err_set(err, ERR_MSG, "connect %s: %s", endpoint, zmq_strerror(e));
    }
    return 0;
}

/* ---- send -------------------------------------------------------------------------------- */

static int send_frame(void *sock, const void *data, size_t n, int more, int dontwait, int first,
                      err_t *err)
{
    int f = (more ? ZMQ_SNDMORE : 0) | (dontwait && first ? ZMQ_DONTWAIT : 0);
    for (;;) {
        if (zmq_send(sock, data, n, f) >= 0) return 0;
        /* Once the first frame is queued the rest of the message must follow: retry EINTR. */
        if (zmq_errno() == EINTR && !first) continue;
        return zerr(err, first ? "send" : "send (mid-message)");
    }
}

int msg_send_to(void *sock, const msg_route_t *route, const Moda__Envelope *env,
                const msg_part_t *parts, int nparts, int flags, err_t *err)
{
    if (!sock || !env) return err_set(err, ERR_INVALID, "msg_send: no socket or envelope");
    if (nparts < 0 || nparts > MSG_MAX_PARTS)
        return err_set(err, ERR_RANGE, "msg_send: %d parts (max %d)", nparts, MSG_MAX_PARTS);
    if (nparts > 0 && !parts) return err_set(err, ERR_INVALID, "msg_send: parts is NULL");

    uint64_t sizes[MSG_MAX_PARTS > 0 ? MSG_MAX_PARTS : 1];
    for (int i = 0; i < nparts; i++) sizes[i] = parts[i].size;
    Moda__Header h = MODA__HEADER__INIT;
    h.schema_version = MSG_SCHEMA_VERSION;
    h.message_id = atomic_fetch_add(&g_next_id, 1);
    h.sender = g_sender;
    h.send_time_us = msg_now_us();
    h.n_part_sizes = (size_t)nparts;
    h.part_sizes = sizes;
    h.reply_to = env->header ? env->header->reply_to : 0;
    Moda__Envelope e = *env; /* shallow copy: only the header pointer differs */
    e.header = &h;

    size_t n = moda__envelope__get_packed_size(&e);
    zmq_msg_t zm;
    if (zmq_msg_init_size(&zm, n) != 0) return zerr(err, "allocating envelope frame");
    moda__envelope__pack(&e, zmq_msg_data(&zm));

    int dontwait = flags & MSG_DONTWAIT;
    int first = 1, rc = 0;
    if (route) {
        rc = send_frame(sock, route->id, route->id_len, 1, dontwait, first, err);
        first = 0;
        if (!rc && route->delimiter) rc = send_frame(sock, "", 0, 1, dontwait, first, err);
    }
    if (rc) {
        zmq_msg_close(&zm);
        return rc;
    }
    int zf = (nparts ? ZMQ_SNDMORE : 0) | (dontwait && first ? ZMQ_DONTWAIT : 0);
    for (;;) {
        if (zmq_msg_send(&zm, sock, zf) >= 0) break;
        if (zmq_errno() == EINTR && !first) continue;
        rc = zerr(err, "send envelope");
        zmq_msg_close(&zm);
        return rc;
    }
    for (int i = 0; i < nparts && !rc; i++)
        rc = send_frame(sock, parts[i].data, parts[i].size, i + 1 < nparts, 0, 0, err);
    return rc;
}

int msg_send(void *sock, const Moda__Envelope *env, const msg_part_t *parts, int nparts,
             err_t *err)
{
    return msg_send_to(sock, NULL, env, parts, nparts, 0, err);
}

int msg_publish(void *sock, const char *topic, const Moda__Envelope *env, const msg_part_t *parts,
                int nparts, err_t *err)
{
    msg_route_t r;
    size_t n = topic ? strlen(topic) : 0;
    if (n >= sizeof r.id)
        return err_set(err, ERR_RANGE, "topic of %zu bytes (max %d)", n, MSG_MAX_ROUTE - 1);
    memcpy(r.id, topic ? topic : "", n);
    r.id_len = n;
    r.delimiter = 0;
    return msg_send_to(sock, &r, env, parts, nparts, MSG_DONTWAIT, err);
}

int msg_reply(void *sock, const msg_t *req, const Moda__Envelope *env, const msg_part_t *parts,
              int nparts, err_t *err)
{
    if (!req || !env) return err_set(err, ERR_INVALID, "msg_reply: no request or envelope");
    Moda__Header h = MODA__HEADER__INIT;
    h.reply_to = req->request_id;
    Moda__Envelope e = *env;
    e.header = &h;
    /* Never block a service on a slow or vanished client: replies are best effort. */
    return msg_send_to(sock, req->has_route ? &req->route : NULL, &e, parts, nparts,
                       req->has_route ? MSG_DONTWAIT : 0, err);
}

int msg_reply_error(void *sock, const msg_t *req, int code, const char *text, err_t *err)
{
    Moda__Status st = MODA__STATUS__INIT;
    st.code = msg_status_code(code);
    st.message = (char *)(text ? text : err_str(code));
    Moda__ErrorReply er = MODA__ERROR_REPLY__INIT;
    er.status = &st;
    Moda__Envelope e = MODA__ENVELOPE__INIT;
    e.body_case = MODA__ENVELOPE__BODY_ERROR;
    e.error = &er;
    return msg_reply(sock, req, &e, NULL, 0, err);
}

/* ---- receive ----------------------------------------------------------------------------- */

typedef struct frames {
    zmq_msg_t *z;
    int n, cap;
} frames_t;

void msg_free(msg_t **mp)
{
    if (!mp || !*mp) return;
    msg_t *m = *mp;
    if (m->env) moda__envelope__free_unpacked(m->env, NULL);
    frames_t *f = m->priv_;
    if (f) {
        for (int i = 0; i < f->n; i++) zmq_msg_close(&f->z[i]);
        free(f->z);
        free(f);
    }
    free(m->parts);
    free(m);
    *mp = NULL;
}

/* Read every frame of one message into f. Returns 0 or an error before the first frame. */
static int read_frames(void *sock, int flags, frames_t *f, err_t *err)
{
    int first = 1;
    for (;;) {
        if (f->n == f->cap) {
            int cap = f->cap ? f->cap * 2 : 8;
            zmq_msg_t *z = realloc(f->z, (size_t)cap * sizeof *z);
            if (!z) return err_set(err, ERR_NOMEM, "msg_recv: no memory for %d frames", cap);
            f->z = z;
            f->cap = cap;
        }
        zmq_msg_t *zm = &f->z[f->n];
        zmq_msg_init(zm);
        int rc = zmq_msg_recv(zm, sock, first && (flags & MSG_DONTWAIT) ? ZMQ_DONTWAIT : 0);
        if (rc < 0) {
            zmq_msg_close(zm);
            if (!first && zmq_errno() == EINTR) continue; /* rest of a multipart is queued */
            return zerr(err, first ? "recv" : "recv (mid-message)");
        }
        f->n++;
        first = 0;
        if (!zmq_msg_more(zm)) return 0;
    }
}

int msg_recv(void *sock, int is_router, const msg_limits_t *lim, int flags, msg_t **out,
             err_t *err)
{
    msg_limits_t dl;
    if (!lim) {
        msg_limits_default(&dl);
        lim = &dl;
    }
    *out = NULL;
    msg_t *m = calloc(1, sizeof *m);
    frames_t *f = calloc(1, sizeof *f);
    if (!m || !f) {
        free(m);
        free(f);
        return err_set(err, ERR_NOMEM, "msg_recv: out of memory");
    }
    m->priv_ = f;
    int rc = read_frames(sock, flags, f, err);
    if (rc) {
        if (f->n == 0) {
            msg_free(&m);
            return rc;
        }
        /* A partial message can only come from a broken socket; report it. */
        *out = m;
        return rc;
    }
    *out = m;

    int i = 0;
    if (is_router) {
        size_t idn = zmq_msg_size(&f->z[0]);
        if (idn > sizeof m->route.id)
            return err_set(err, ERR_FORMAT, "peer id of %zu bytes", idn);
        memcpy(m->route.id, zmq_msg_data(&f->z[0]), idn);
        m->route.id_len = idn;
        m->has_route = 1;
        i = 1;
        if (i < f->n && zmq_msg_size(&f->z[i]) == 0) {
            m->route.delimiter = 1;
            i++;
        }
    }
    if (flags & MSG_TOPIC) {
        size_t tn = i < f->n ? zmq_msg_size(&f->z[i]) : 0;
        if (tn >= sizeof m->topic)
            return err_set(err, ERR_FORMAT, "topic frame of %zu bytes (max %d)", tn,
                           MSG_MAX_ROUTE - 1);
        if (i < f->n) memcpy(m->topic, zmq_msg_data(&f->z[i]), tn);
        m->topic[tn] = '\0';
        m->has_topic = 1;
        i++;
    }
    m->nframes = f->n - i;
    for (int k = i; k < f->n; k++) m->wire_bytes += zmq_msg_size(&f->z[k]);
    if (m->nframes <= 0) return err_set(err, ERR_FORMAT, "message has no envelope frame");

    size_t envn = zmq_msg_size(&f->z[i]);
    if (envn > lim->max_envelope_bytes)
        return err_set(err, ERR_RANGE, "envelope frame of %zu bytes exceeds limit %zu", envn,
                       lim->max_envelope_bytes);
    if (m->wire_bytes > lim->max_total_bytes)
        return err_set(err, ERR_RANGE, "message of %zu bytes exceeds limit %zu", m->wire_bytes,
                       lim->max_total_bytes);
    int nparts = m->nframes - 1;
    int maxp = lim->max_parts < MSG_MAX_PARTS ? lim->max_parts : MSG_MAX_PARTS;
    if (nparts > maxp)
        return err_set(err, ERR_RANGE, "message has %d binary parts (max %d)", nparts, maxp);

    m->env = moda__envelope__unpack(NULL, envn, zmq_msg_data(&f->z[i]));
    if (!m->env)
        return err_set(err, ERR_FORMAT, "envelope frame of %zu bytes is not a valid protobuf Envelope",
                       envn);
    const Moda__Header *h = m->env->header;
    if (!h) return err_set(err, ERR_FORMAT, "envelope has no header");
    m->request_id = h->message_id;
    if (h->schema_version < MSG_SCHEMA_MIN || h->schema_version > MSG_SCHEMA_VERSION)
        return err_set(err, ERR_VERSION, "schema_version %u from '%s' not supported (this build: %u..%u)",
                       h->schema_version, h->sender ? h->sender : "", MSG_SCHEMA_MIN,
                       MSG_SCHEMA_VERSION);
    if (h->n_part_sizes != (size_t)nparts)
        return err_set(err, ERR_FORMAT, "%s multipart: header declares %zu binary parts, got %d",
                       (size_t)nparts < h->n_part_sizes ? "truncated" : "padded", h->n_part_sizes,
                       nparts);
    if (nparts > 0) {
        m->parts = calloc((size_t)nparts, sizeof *m->parts);
        if (!m->parts) return err_set(err, ERR_NOMEM, "msg_recv: out of memory");
    }
    for (int k = 0; k < nparts; k++) {
        zmq_msg_t *z = &f->z[i + 1 + k];
        if (zmq_msg_size(z) != h->part_sizes[k])
            return err_set(err, ERR_FORMAT,
                           "truncated multipart: part %d has %zu bytes, header declares %llu", k,
                           zmq_msg_size(z), (unsigned long long)h->part_sizes[k]);
        m->parts[k].data = zmq_msg_data(z);
        m->parts[k].size = zmq_msg_size(z);
    }
    m->nparts = nparts;
    if (m->env->body_case == MODA__ENVELOPE__BODY__NOT_SET)
        return err_set(err, ERR_UNSUPPORTED, "envelope from '%s' has no body this build knows",
                       h->sender ? h->sender : "");
    return 0;
}

/* ---- helpers ----------------------------------------------------------------------------- */

Moda__StatusCode msg_status_code(int code)
{
    switch (code) {
    case ERR_OK: return MODA__STATUS_CODE__STATUS_OK;
    case ERR_INVALID:
    case ERR_CONFIG: return MODA__STATUS_CODE__STATUS_INVALID;
    case ERR_FORMAT: return MODA__STATUS_CODE__STATUS_FORMAT;
    case ERR_VERSION: return MODA__STATUS_CODE__STATUS_VERSION;
    case ERR_RANGE: return MODA__STATUS_CODE__STATUS_RANGE;
    case ERR_NOTFOUND: return MODA__STATUS_CODE__STATUS_NOT_FOUND;
    case ERR_EXISTS: return MODA__STATUS_CODE__STATUS_EXISTS;
    case ERR_STATE: return MODA__STATUS_CODE__STATUS_STATE;
    case ERR_UNSUPPORTED: return MODA__STATUS_CODE__STATUS_UNSUPPORTED;
    case ERR_TIMEOUT: return MODA__STATUS_CODE__STATUS_TIMEOUT;
    default: return MODA__STATUS_CODE__STATUS_INTERNAL;
    }
}

int msg_err_code(Moda__StatusCode c)
{
    switch (c) {
    case MODA__STATUS_CODE__STATUS_OK: return 0;
    case MODA__STATUS_CODE__STATUS_INVALID: return ERR_INVALID;
    case MODA__STATUS_CODE__STATUS_FORMAT: return ERR_FORMAT;
    case MODA__STATUS_CODE__STATUS_VERSION: return ERR_VERSION;
    case MODA__STATUS_CODE__STATUS_RANGE: return ERR_RANGE;
    case MODA__STATUS_CODE__STATUS_NOT_FOUND: return ERR_NOTFOUND;
    case MODA__STATUS_CODE__STATUS_EXISTS: return ERR_EXISTS;
    case MODA__STATUS_CODE__STATUS_STATE: return ERR_STATE;
    case MODA__STATUS_CODE__STATUS_UNSUPPORTED: return ERR_UNSUPPORTED;
    case MODA__STATUS_CODE__STATUS_BUSY: return ERR_STATE;
    case MODA__STATUS_CODE__STATUS_TIMEOUT: return ERR_TIMEOUT;
    default: return ERR_MSG;
    }
}

const char *msg_status_name(Moda__StatusCode code)
{
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&moda__status_code__descriptor, (int)code);
    return v ? v->name : "STATUS_UNKNOWN";
}

const char *msg_body_name(Moda__Envelope__BodyCase c)
{
    if (c == MODA__ENVELOPE__BODY__NOT_SET) return "none";
    const ProtobufCFieldDescriptor *fd =
        protobuf_c_message_descriptor_get_field(&moda__envelope__descriptor, (unsigned)c);
    return fd ? fd->name : "unknown";
}

int msg_request(void *sock, const Moda__Envelope *env, const msg_part_t *parts, int nparts,
                int timeout_ms, const msg_limits_t *lim, msg_t **reply, err_t *err)
{
    *reply = NULL;
    int64_t deadline = msg_now_us() + (int64_t)timeout_ms * 1000;
    /* The id msg_send is about to use: the counter is only read, never reserved, so with
     * concurrent senders in other threads the match below may need a retry; fine for a CLI. */
    uint64_t want = atomic_load(&g_next_id);
    int rc = msg_send_to(sock, NULL, env, parts, nparts, MSG_DONTWAIT, err);
    if (rc == ERR_TIMEOUT)
        return err_set(err, ERR_TIMEOUT, "request not sent: peer not connected or queue full");
    if (rc) return rc;
    for (;;) {
        int64_t left = (deadline - msg_now_us()) / 1000;
        if (left <= 0) return err_set(err, ERR_TIMEOUT, "no reply within %d ms", timeout_ms);
        zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
        int n = zmq_poll(&it, 1, (long)left);
        if (n < 0) return zerr(err, "poll");
        if (n == 0) continue;
        msg_t *m;
        rc = msg_recv(sock, 0, lim, MSG_DONTWAIT, &m, err);
        if (rc == ERR_TIMEOUT && !m) continue;
        if (m && m->env && m->env->header && m->env->header->reply_to != 0 &&
            m->env->header->reply_to < want) {
            msg_free(&m); /* stale reply to an earlier request on this DEALER */
            continue;
        }
        *reply = m;
        return rc;
    }
}
