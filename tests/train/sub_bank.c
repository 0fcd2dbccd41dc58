/* sub_bank.c — test helper: print every BankChanged the registry publishes, for SECONDS.
 *
 *   train_test_sub_bank PUB_ENDPOINT SECONDS
 *
 * Subscribes to topic "bank." and prints one line per message: "bank <alias> <version>"
 * (flushed), so a test script can see that a promote was announced. Exit 0 at the deadline,
 * 2 on bad arguments or a socket error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <zmq.h>

#include "msg.h"

int main(int argc, char **argv)
{
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
