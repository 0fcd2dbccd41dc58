/* sub_bank.c — test helper: print every BankChanged the registry publishes, for SECONDS.
 *
 *   train_test_sub_bank PUB_ENDPOINT SECONDS
 *
 * Subscribes to topic "bank." and prints one line per message: "bank <alias> <version>"
 * (flushed), so a test script can see that a promote was announced. Exit 0 at the deadline,
 * 2 on bad arguments or a socket error.
 *
 *   train_test_sub_bank --garbage ENDPOINT     malformed requests, see garbage() below
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "msg.h"

/* --garbage ENDPOINT: send 3 malformed requests (not protobuf, truncated parts, empty body)
 * on a REQ socket; each must be answered with an ErrorReply. Exit 0 when all were, else 1. */
static int garbage(const char *ep)
{
    err_t err = {0};
    void *ctx = zmq_ctx_new();
    int ok = 0;
    for (int k = 0; k < 3; k++) {
        msg_sockopt_t so;
        msg_sockopt_default(&so);
        so.rcvtimeo_ms = 5000;
        so.sndtimeo_ms = 5000;
        void *s = msg_socket_new(ctx, ZMQ_REQ, &so, &err);
        if (!s || msg_connect(s, ep, &err)) break;
        if (k == 0) {
            zmq_send(s, "\xff\xfe garbage", 10, 0);
        } else {
            Moda__HealthRequest hr = MODA__HEALTH_REQUEST__INIT;
            Moda__Envelope env = MODA__ENVELOPE__INIT;
            if (k == 1) { /* header declares one 100-byte part that never comes */
                env.body_case = MODA__ENVELOPE__BODY_HEALTH_REQUEST;
                env.health_request = &hr;
            }
            Moda__Header h = MODA__HEADER__INIT;
            uint64_t sz = 100;
            h.schema_version = MSG_SCHEMA_VERSION;
            h.message_id = 1;
            h.part_sizes = k == 1 ? &sz : NULL;
            h.n_part_sizes = k == 1 ? 1 : 0;
            env.header = &h;
            uint8_t buf[256];
            size_t n = moda__envelope__pack(&env, buf);
            zmq_send(s, buf, n, 0);
        }
        msg_t *m = NULL;
        int rc = msg_recv(s, 0, NULL, 0, &m, &err);
        if (!rc && m->env->body_case == MODA__ENVELOPE__BODY_ERROR) ok++;
        else fprintf(stderr, "garbage %d: no ErrorReply (%s)\n", k, rc ? err.msg : msg_body_name(m->env->body_case));
        msg_free(&m);
        msg_socket_close(&s);
    }
    zmq_ctx_term(ctx);
    printf("garbage: %d/3 answered with ErrorReply\n", ok);
    return ok == 3 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--garbage")) return garbage(argv[2]);
    if (argc != 3) {
        fprintf(stderr, "usage: %s PUB_ENDPOINT SECONDS\n", argv[0]);
        return 2;
    }
    err_t err = {0};
    void *ctx = zmq_ctx_new();
    void *sub = msg_socket_new(ctx, ZMQ_SUB, NULL, &err);
    if (!sub || msg_connect(sub, argv[1], &err) || zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "bank.", 5)) {
        fprintf(stderr, "sub_bank: %s\n", err.msg);
        return 2;
    }
    int64_t end = msg_now_us() + (int64_t)(atof(argv[2]) * 1e6);
    while (msg_now_us() < end) {
        zmq_pollitem_t it = {sub, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 100) <= 0) continue;
        msg_t *m = NULL;
        if (!msg_recv(sub, 0, NULL, MSG_TOPIC | MSG_DONTWAIT, &m, &err) &&
            m->env->body_case == MODA__ENVELOPE__BODY_BANK_CHANGED && m->env->bank_changed) {
            printf("bank %s %llu\n", m->env->bank_changed->alias,
                   (unsigned long long)m->env->bank_changed->version);
            fflush(stdout);
        }
        msg_free(&m);
    }
    msg_socket_close(&sub);
    zmq_ctx_term(ctx);
    return 0;
}
