/* client.c — request/reply with one moda service and whole-file helpers for the CLI (see
 * client.h). The reply Status is found by reflection on the Envelope's body (every *Reply
 * message and ErrorReply carry `status`), so no per-service table is needed here. */
#include "client.h"
#include "paths.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

int client_open(client_t *c, void *ctx, const char *endpoint, const char *service, int timeout_ms,
                err_t *err)
{
    memset(c, 0, sizeof *c);
    c->endpoint = endpoint;
    c->service = service;
    c->timeout_ms = timeout_ms;
    msg_limits_default(&c->lim);
    if (!ctx) {
        ctx = zmq_ctx_new();
        if (!ctx) return err_set(err, ERR_MSG, "zmq_ctx_new failed");
        c->own_ctx = 1;
    }
    c->ctx = ctx;
    msg_sockopt_t so;
    msg_sockopt_default(&so);
    so.max_frame_bytes = -1; /* reply size is checked by msg_recv against c->lim */
    so.reconnect_ivl_ms = 20;
    so.sndtimeo_ms = timeout_ms;
    so.rcvtimeo_ms = timeout_ms;
    c->sock = msg_socket_new(c->ctx, ZMQ_REQ, &so, err);
    if (!c->sock) return err->code;
    return msg_connect(c->sock, endpoint, err);
}

void client_close(client_t *c)
{
    msg_socket_close(&c->sock);
    if (c->own_ctx && c->ctx) zmq_ctx_term(c->ctx);
    c->ctx = NULL;
    c->own_ctx = 0;
}

int client_request(client_t *c, const Moda__Envelope *env, const msg_part_t *parts, int nparts,
                   msg_t **reply, err_t *err)
{
    return msg_request(c->sock, env, parts, nparts, c->timeout_ms, &c->lim, reply, err);
}

const Moda__Status *client_reply_status(const Moda__Envelope *e)
{
    if (!e || e->body_case == MODA__ENVELOPE__BODY__NOT_SET) return NULL;
    const ProtobufCFieldDescriptor *fd =
        protobuf_c_message_descriptor_get_field(&moda__envelope__descriptor, (unsigned)e->body_case);
    if (!fd || fd->type != PROTOBUF_C_TYPE_MESSAGE) return NULL;
    const ProtobufCMessage *body = *(ProtobufCMessage *const *)((const char *)e + fd->offset);
    if (!body) return NULL;
    const ProtobufCFieldDescriptor *sf = protobuf_c_message_descriptor_get_field_by_name(body->descriptor, "status");
    if (!sf || sf->type != PROTOBUF_C_TYPE_MESSAGE || sf->descriptor != &moda__status__descriptor) return NULL;
    return *(Moda__Status *const *)((const char *)body + sf->offset);
}

int client_call(client_t *c, const Moda__Envelope *env, const msg_part_t *parts, int nparts,
                Moda__Envelope__BodyCase want, msg_t **reply, err_t *err)
{
    int rc = client_request(c, env, parts, nparts, reply, err);
    if (rc) {
        err_wrap(err, "%s", c->endpoint);
        return rc;
    }
    const Moda__Envelope *e = (*reply)->env;
    const Moda__Status *st = client_reply_status(e);
    if (st && st->code != MODA__STATUS_CODE__STATUS_OK)
        return err_set(err, msg_err_code(st->code), "%s: %s", c->service, st->message);
    if (e->body_case != want)
        return err_set(err, ERR_FORMAT, "%s answered with %s, expected %s", c->service, msg_body_name(e->body_case),
                       msg_body_name(want));
    return 0;
}

int client_health(client_t *c, msg_t **reply, err_t *err)
{
    Moda__HealthRequest hr = MODA__HEALTH_REQUEST__INIT;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_HEALTH_REQUEST;
    env.health_request = &hr;
    int rc = client_request(c, &env, NULL, 0, reply, err);
    if (rc) {
        err_wrap(err, "%s", c->endpoint);
        return rc;
    }
    const Moda__Envelope *e = (*reply)->env;
    if (e->body_case == MODA__ENVELOPE__BODY_HEALTH_REPLY && e->health_reply) return 0;
    if (e->body_case == MODA__ENVELOPE__BODY_ERROR && e->error && e->error->status)
        return err_set(err, msg_err_code(e->error->status->code), "%s answered with error %d: %s", c->endpoint,
                       (int)e->error->status->code, e->error->status->message);
    return err_set(err, ERR_FORMAT, "%s answered with %s, not health_reply", c->endpoint,
                   msg_body_name(e->body_case));
}

int client_help_version(const cfg_t *cfg, int rc)
{
    if (rc == CFG_HELP) cfg_write_help(cfg, stdout);
    else if (rc == CFG_VERSION) printf("moda %s (schema %u)\n", MODA_VERSION, MSG_SCHEMA_VERSION);
    return rc == CFG_HELP || rc == CFG_VERSION;
}

void client_run_dir(const cfg_t *cfg, char *out, size_t n)
{
    if (*cfg_str(cfg, "run_dir")) snprintf(out, n, "%s", cfg_str(cfg, "run_dir"));
    else snprintf(out, n, "/tmp/moda-%u", (unsigned)getuid());
}

int client_int_opt(const char *cmd, const char *opt, const char *v, int lo, int hi, int *out)
{
    char *end = NULL;
    errno = 0;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || !*v || *end || errno || x < lo || x > hi) {
        fprintf(stderr, "moda %s: %s '%s': need an integer %d..%d\n", cmd, opt, v ? v : "", lo, hi);
        return -1;
    }
    *out = (int)x;
    return 0;
}

int client_read_file(const char *path, unsigned char **out, size_t *len, err_t *err)
{
    return paths_read_file(path, out, len, err);
}

int client_write_file(const char *path, const void *data, size_t len, err_t *err)
{
    FILE *f = fopen(path, "wb");
    if (!f) return err_errno(err, ERR_IO, errno, "creating %s", path);
    size_t put = fwrite(data, 1, len, f);
    if (fclose(f) || put != len) return err_errno(err, ERR_IO, errno, "writing %s", path);
    return 0;
}

int client_write_file_atomic(const char *path, const void *data, size_t len, err_t *err)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return err_errno(err, ERR_IO, errno, "creating %s", tmp);
    const char *p = data;
    size_t left = len;
    while (left) {
        ssize_t n = write(fd, p, left);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            int e = errno;
            close(fd);
            unlink(tmp);
            return err_errno(err, ERR_IO, e, "writing %s", tmp);
        }
        p += n;
        left -= (size_t)n;
    }
    if (fsync(fd) || close(fd) || rename(tmp, path)) {
        int e = errno;
        unlink(tmp);
        return err_errno(err, ERR_IO, e, "saving %s", path);
    }
    return 0;
}
