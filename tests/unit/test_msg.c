/* test_msg — common/msg: envelope + binary parts over inproc, ipc and tcp loopback, and the
 * receive-side validation (malformed protobuf, truncated/padded multipart, oversized, unknown
 * schema version, missing header/body), endpoint checks, timeouts, ZMQ_MAXMSGSIZE.
 *
 * Raw frames are built with libzmq directly so the checks do not trust msg_send. Endpoints are
 * unique per process (pid in ipc paths, tcp port chosen by the kernel).
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "msg.h"
#include "t_check.h"

static void *ctx;

static void *sock(int type, int rcvtimeo_ms)
{
    msg_sockopt_t o;
    msg_sockopt_default(&o);
    o.rcvtimeo_ms = rcvtimeo_ms;
    o.sndtimeo_ms = 2000;
    o.reconnect_ivl_ms = 20;
    err_t e = {0};
    void *s = msg_socket_new(ctx, type, &o, &e);
    if (!s) fprintf(stderr, "socket: %s\n", e.msg);
    return s;
}

static char *last_endpoint(void *s)
{
    static char buf[MSG_ENDPOINT_MAX];
    size_t n = sizeof buf;
    zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, buf, &n);
    return buf;
}

/* Frame envelope with `nparts` declared part sizes. Returns packed bytes (malloc). */
static uint8_t *pack_env(uint32_t schema, const uint64_t *sizes, size_t nsizes, int with_header,
                         int with_body, size_t *n)
{
    Moda__Header h = MODA__HEADER__INIT;
    h.schema_version = schema;
    h.message_id = 77;
    h.sender = "raw-test";
    h.part_sizes = (uint64_t *)sizes;
    h.n_part_sizes = nsizes;
    Moda__Frame fr = MODA__FRAME__INIT;
    fr.camera_id = "cam";
    Moda__Envelope e = MODA__ENVELOPE__INIT;
    if (with_header) e.header = &h;
    if (with_body) {
        e.body_case = MODA__ENVELOPE__BODY_FRAME;
        e.frame = &fr;
    }
    *n = moda__envelope__get_packed_size(&e);
    uint8_t *b = malloc(*n + 1);
    moda__envelope__pack(&e, b);
    return b;
}

static void send_raw(void *s, const void *const *frames, const size_t *sizes, int n)
{
    for (int i = 0; i < n; i++)
        T(zmq_send(s, frames[i], sizes[i], i + 1 < n ? ZMQ_SNDMORE : 0) == (int)sizes[i]);
}

/* One round trip DEALER -> ROUTER -> DEALER with two parts, one of 1 MiB, one empty. */
static void roundtrip(const char *bind_ep)
{
    err_t e = {0};
    void *srv = sock(ZMQ_ROUTER, 3000), *cli = sock(ZMQ_DEALER, 3000);
    T(msg_bind(srv, bind_ep, &e) == 0);
    char ep[MSG_ENDPOINT_MAX];
    snprintf(ep, sizeof ep, "%s", last_endpoint(srv));
    T(msg_connect(cli, ep, &e) == 0);

    size_t big = 1u << 20;
    uint8_t *pix = malloc(big);
    for (size_t i = 0; i < big; i++) pix[i] = (uint8_t)(i * 2654435761u >> 13);
    msg_part_t parts[2] = {{pix, big}, {"", 0}};
    Moda__Frame fr = MODA__FRAME__INIT;
    fr.camera_id = "cam-1";
    fr.seq = 9;
    fr.width = 1024;
    fr.height = 1024;
    fr.format = MODA__PIXEL_FORMAT__PIXEL_FORMAT_GRAY8;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_FRAME;
    env.frame = &fr;
    int64_t t0 = msg_now_us();
    T(msg_send(cli, &env, parts, 2, &e) == 0);
    T(msg_send(cli, &env, parts, 1, &e) == 0);

    msg_t *m = NULL;
    int rc = msg_recv(srv, 1, NULL, 0, &m, &e);
    T(rc == 0);
    if (rc) fprintf(stderr, "  %s: %s\n", ep, e.msg);
    uint64_t id1 = 0;
    if (m && !rc) {
        const Moda__Header *h = m->env->header;
        T(h->schema_version == MSG_SCHEMA_VERSION);
        T(!strcmp(h->sender, "test-msg"));
        T(h->send_time_us >= t0 && h->send_time_us <= msg_now_us());
        T(h->n_part_sizes == 2 && h->part_sizes[0] == big && h->part_sizes[1] == 0);
        T(m->nparts == 2 && m->parts[0].size == big && !memcmp(m->parts[0].data, pix, big));
        T(m->parts[1].size == 0);
        T(m->env->body_case == MODA__ENVELOPE__BODY_FRAME && m->env->frame->seq == 9 &&
          !strcmp(m->env->frame->camera_id, "cam-1"));
        T(m->has_route && m->route.id_len > 0 && !m->route.delimiter);
        id1 = m->request_id;
        T(id1 > 0);
        /* Reply goes back to the same peer with reply_to = the request id. */
        Moda__HealthRequest hr = MODA__HEALTH_REQUEST__INIT;
        Moda__Envelope re = MODA__ENVELOPE__INIT;
        re.body_case = MODA__ENVELOPE__BODY_HEALTH_REQUEST;
        re.health_request = &hr;
        T(msg_reply(srv, m, &re, NULL, 0, &e) == 0);
    }
    msg_free(&m);
    T(m == NULL);
    rc = msg_recv(srv, 1, NULL, 0, &m, &e);
    T(rc == 0 && m && m->nparts == 1 && m->request_id == id1 + 1);
    msg_free(&m);
    rc = msg_recv(cli, 0, NULL, 0, &m, &e);
    T(rc == 0 && m && m->env->header->reply_to == id1 && !m->has_route);
    msg_free(&m);
    free(pix);
    msg_socket_close(&cli);
    msg_socket_close(&srv);
    T(cli == NULL && srv == NULL);
}

/* REQ -> ROUTER keeps the empty delimiter in the route and echoes it. */
static void req_router(void)
{
    err_t e = {0};
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://test-msg-req-%d", (int)getpid());
    void *srv = sock(ZMQ_ROUTER, 2000), *cli = sock(ZMQ_REQ, 2000);
    T(msg_bind(srv, ep, &e) == 0 && msg_connect(cli, ep, &e) == 0);
    Moda__HealthRequest hr = MODA__HEALTH_REQUEST__INIT;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_HEALTH_REQUEST;
    env.health_request = &hr;
    msg_t *m = NULL, *r = NULL;
    T(msg_send(cli, &env, NULL, 0, &e) == 0);
    T(msg_recv(srv, 1, NULL, 0, &m, &e) == 0 && m && m->route.delimiter);
    if (m) T(msg_reply_error(srv, m, ERR_NOTFOUND, "no such thing", &e) == 0);
    T(msg_recv(cli, 0, NULL, 0, &r, &e) == 0);
    T(r && r->env->body_case == MODA__ENVELOPE__BODY_ERROR &&
      r->env->error->status->code == MODA__STATUS_CODE__STATUS_NOT_FOUND &&
      !strcmp(r->env->error->status->message, "no such thing"));
    msg_free(&m);
    msg_free(&r);
    msg_socket_close(&cli);
    msg_socket_close(&srv);
}

/* Send raw frames PUSH -> PULL and check the code msg_recv returns, then that a good message
 * right after is still received intact (the bad one was fully drained). */
static void expect_bad(void *push, void *pull, const msg_limits_t *lim, const void *const *frames,
                       const size_t *sizes, int n, int want, const char *want_text)
{
    err_t e = {0};
    send_raw(push, frames, sizes, n);
    msg_t *m = NULL;
    int rc = msg_recv(pull, 0, lim, 0, &m, &e);
    T(rc == want);
    if (rc != want) fprintf(stderr, "  got %d (%s), want %d\n", rc, e.msg, want);
    T_HAS(e.msg, want_text);
    T(m != NULL); /* the caller gets the message for an error reply */
    msg_free(&m);
    Moda__HealthRequest hr = MODA__HEALTH_REQUEST__INIT;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_HEALTH_REQUEST;
    env.health_request = &hr;
    msg_part_t p = {"xyz", 3};
    T(msg_send(push, &env, &p, 1, &e) == 0);
    rc = msg_recv(pull, 0, lim, 0, &m, &e);
    T(rc == 0 && m && m->nparts == 1 && !memcmp(m->parts[0].data, "xyz", 3));
    msg_free(&m);
}

static void bad_messages(void)
{
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://test-msg-bad-%d", (int)getpid());
    err_t e = {0};
    void *pull = sock(ZMQ_PULL, 2000), *push = sock(ZMQ_PUSH, 2000);
    T(msg_bind(pull, ep, &e) == 0 && msg_connect(push, ep, &e) == 0);
    msg_limits_t lim;
    msg_limits_default(&lim);
    lim.max_envelope_bytes = 4096;
    lim.max_total_bytes = 100000;
    lim.max_parts = 4;

    /* malformed protobuf: a field with wire type 7 (invalid) */
    const char junk[] = "\x0f\xff\xff\xff not protobuf";
    expect_bad(push, pull, &lim, (const void *[]){junk}, (size_t[]){sizeof junk}, 1, ERR_FORMAT,
               "not a valid protobuf");

    size_t n;
    uint64_t two[2] = {10, 20};
    uint8_t *env = pack_env(MSG_SCHEMA_VERSION, two, 2, 1, 1, &n);
    char p10[10] = {0}, p20[20] = {0};
    /* truncated: header declares 2 parts, only 1 arrives */
    expect_bad(push, pull, &lim, (const void *[]){env, p10}, (size_t[]){n, 10}, 2, ERR_FORMAT,
               "truncated multipart: header declares 2 binary parts, got 1");
    /* truncated part: second part shorter than declared */
    expect_bad(push, pull, &lim, (const void *[]){env, p10, p10}, (size_t[]){n, 10, 10}, 3,
               ERR_FORMAT, "part 1 has 10 bytes, header declares 20");
    /* padded: an extra frame */
    expect_bad(push, pull, &lim, (const void *[]){env, p10, p20, p10}, (size_t[]){n, 10, 20, 10},
               4, ERR_FORMAT, "padded multipart");
    free(env);

    /* unknown schema version */
    env = pack_env(99, NULL, 0, 1, 1, &n);
    expect_bad(push, pull, &lim, (const void *[]){env}, (size_t[]){n}, 1, ERR_VERSION,
               "schema_version 99 from 'raw-test' not supported");
    free(env);
    env = pack_env(0, NULL, 0, 1, 1, &n);
    expect_bad(push, pull, &lim, (const void *[]){env}, (size_t[]){n}, 1, ERR_VERSION,
               "schema_version 0");
    free(env);
    /* no header, no body */
    env = pack_env(1, NULL, 0, 0, 1, &n);
    expect_bad(push, pull, &lim, (const void *[]){env}, (size_t[]){n}, 1, ERR_FORMAT, "no header");
    free(env);
    env = pack_env(1, NULL, 0, 1, 0, &n);
    expect_bad(push, pull, &lim, (const void *[]){env}, (size_t[]){n}, 1, ERR_UNSUPPORTED,
               "no body this build knows");
    /* a body from a newer schema: unknown field 999 (length-delimited, 2 bytes) */
    uint8_t fut[64];
    memcpy(fut, env, n);
    uint8_t tail[] = {0xba, 0x3e, 0x02, 0x08, 0x01}; /* key (999<<3|2) = 0x1f3a varint */
    memcpy(fut + n, tail, sizeof tail);
    expect_bad(push, pull, &lim, (const void *[]){fut}, (size_t[]){n + sizeof tail}, 1,
               ERR_UNSUPPORTED, "no body");
    free(env);

    /* oversized envelope (application limit, below the transport limit) */
    size_t bign = 5000;
    char *bigenv = malloc(bign);
    Moda__Header h = MODA__HEADER__INIT;
    h.schema_version = 1;
    char *longname = malloc(bign);
    memset(longname, 'a', bign - 1);
    longname[bign - 1] = '\0';
    h.sender = longname;
    Moda__Envelope be = MODA__ENVELOPE__INIT;
    be.header = &h;
    size_t ben = moda__envelope__get_packed_size(&be);
    uint8_t *benb = malloc(ben);
    moda__envelope__pack(&be, benb);
    expect_bad(push, pull, &lim, (const void *[]){benb}, (size_t[]){ben}, 1, ERR_RANGE,
               "exceeds limit 4096");
    /* oversized total and too many parts */
    uint64_t one[1] = {200000};
    env = pack_env(1, one, 1, 1, 1, &n);
    char *bigpart = calloc(1, 200000);
    expect_bad(push, pull, &lim, (const void *[]){env, bigpart}, (size_t[]){n, 200000}, 2,
               ERR_RANGE, "exceeds limit 100000");
    free(env);
    uint64_t five[5] = {1, 1, 1, 1, 1};
    env = pack_env(1, five, 5, 1, 1, &n);
    expect_bad(push, pull, &lim, (const void *[]){env, "a", "a", "a", "a", "a"},
               (size_t[]){n, 1, 1, 1, 1, 1}, 6, ERR_RANGE, "5 binary parts (max 4)");
    free(env);
    free(bigpart);
    free(benb);
    free(longname);
    free(bigenv);

    /* timeout on an empty socket: nothing returned */
    msg_t *m = (msg_t *)1;
    int64_t t0 = msg_now_us();
    T(msg_recv(pull, 0, &lim, MSG_DONTWAIT, &m, &e) == ERR_TIMEOUT && m == NULL);
    int to = 100;
    zmq_setsockopt(pull, ZMQ_RCVTIMEO, &to, sizeof to);
    T(msg_recv(pull, 0, &lim, 0, &m, &e) == ERR_TIMEOUT && m == NULL);
    int64_t dt = msg_now_us() - t0;
    T(dt >= 90000 && dt < 1500000);
    msg_socket_close(&push);
    msg_socket_close(&pull);
}

/* ZMQ_MAXMSGSIZE over tcp: an oversized frame never reaches the receiver (zmq drops the
 * connection), and the sender's next messages arrive after it reconnects. */
static void transport_limit(void)
{
    err_t e = {0};
    msg_sockopt_t o;
    msg_sockopt_default(&o);
    o.max_frame_bytes = 4096;
    o.rcvtimeo_ms = 100;
    void *pull = msg_socket_new(ctx, ZMQ_PULL, &o, &e), *push = sock(ZMQ_PUSH, 100);
    T(msg_bind(pull, "tcp://127.0.0.1:*", &e) == 0);
    T(msg_connect(push, last_endpoint(pull), &e) == 0);
    Moda__HealthRequest hr = MODA__HEALTH_REQUEST__INIT;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_HEALTH_REQUEST;
    env.health_request = &hr;
    char *big = calloc(1, 8192);
    msg_part_t p = {big, 8192};
    T(msg_send(push, &env, &p, 1, &e) == 0);
    int got_big = 0, got_small = 0;
    for (int i = 0; i < 40 && !got_small; i++) { /* up to ~4 s */
        msg_t *m = NULL;
        msg_send_to(push, NULL, &env, NULL, 0, MSG_DONTWAIT, &e);
        if (msg_recv(pull, 0, NULL, 0, &m, &e) == 0) {
            if (m->nparts) got_big = 1;
            else got_small = 1;
        }
        msg_free(&m);
    }
    T(!got_big);
    T(got_small);
    free(big);
    msg_socket_close(&push);
    msg_socket_close(&pull);
}

static void endpoints_and_codes(void)
{
    err_t e = {0};
    T(msg_endpoint_check("tcp://127.0.0.1:5555", &e) == 0);
    T(msg_endpoint_check("tcp://*:*", &e) == 0);
    T(msg_endpoint_check("ipc:///tmp/moda-infer.sock", &e) == 0);
    T(msg_endpoint_check("inproc://x", &e) == 0);
    T(msg_endpoint_check("tcp://host:70000", &e) == ERR_INVALID);
    T_HAS(e.msg, "port '70000'");
    T(msg_endpoint_check("tcp://host", &e) == ERR_INVALID);
    T(msg_endpoint_check("udp://x:1", &e) == ERR_INVALID);
    T_HAS(e.msg, "transport");
    char longipc[160] = "ipc:///tmp/";
    memset(longipc + 11, 'x', 120);
    T(msg_endpoint_check(longipc, &e) == ERR_INVALID);
    T_HAS(e.msg, "ipc path must be 1..99 characters");
    void *s = sock(ZMQ_PULL, 0);
    T(msg_bind(s, "tcp://256.1.1.1:1", &e) == ERR_MSG);
    T_HAS(e.msg, "bind tcp://256.1.1.1:1: ");
    msg_socket_close(&s);
    int codes[] = {0,          ERR_INVALID, ERR_FORMAT, ERR_VERSION, ERR_RANGE,
                   ERR_NOTFOUND, ERR_EXISTS, ERR_STATE,  ERR_UNSUPPORTED, ERR_TIMEOUT};
    for (size_t i = 0; i < sizeof codes / sizeof *codes; i++)
        T(msg_err_code(msg_status_code(codes[i])) == codes[i]);
    T(msg_status_code(ERR_DB) == MODA__STATUS_CODE__STATUS_INTERNAL);
    /* msg_request with nobody listening times out instead of hanging */
    void *req = sock(ZMQ_DEALER, 0);
    char ep[64];
    snprintf(ep, sizeof ep, "ipc:///tmp/test-msg-none-%d.sock", (int)getpid());
    T(msg_connect(req, ep, &e) == 0);
    Moda__HealthRequest hr = MODA__HEALTH_REQUEST__INIT;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_HEALTH_REQUEST;
    env.health_request = &hr;
    msg_t *r = NULL;
    T(msg_request(req, &env, NULL, 0, 150, NULL, &r, &e) == ERR_TIMEOUT && r == NULL);
    msg_socket_close(&req);
}

/* A ROUTER in a thread that answers one request with an ErrorReply(NOT_FOUND), after first
 * sending a stale reply (reply_to 1) that msg_request must skip. */
static void *answer_once(void *srv)
{
    msg_t *m = NULL;
    err_t e = {0};
    if (msg_recv(srv, 1, NULL, 0, &m, &e) == 0) {
        msg_t stale = *m;
        stale.request_id = 1;
        msg_reply_error(srv, &stale, ERR_STATE, "stale", &e);
        msg_reply_error(srv, m, ERR_NOTFOUND, "fresh", &e);
    }
    msg_free(&m);
    return NULL;
}

static void request_reply(void)
{
    err_t e = {0};
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://test-msg-rr-%d", (int)getpid());
    void *srv = sock(ZMQ_ROUTER, 2000), *cli = sock(ZMQ_DEALER, 2000);
    T(msg_bind(srv, ep, &e) == 0 && msg_connect(cli, ep, &e) == 0);
    Moda__HealthRequest hr = MODA__HEALTH_REQUEST__INIT;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_HEALTH_REQUEST;
    env.health_request = &hr;
    pthread_t th;
    pthread_create(&th, NULL, answer_once, srv);
    msg_t *r = NULL;
    T(msg_request(cli, &env, NULL, 0, 2000, NULL, &r, &e) == 0);
    T(r && r->env->body_case == MODA__ENVELOPE__BODY_ERROR &&
      !strcmp(r->env->error->status->message, "fresh"));
    msg_free(&r);
    pthread_join(th, NULL);
    msg_socket_close(&cli);
    msg_socket_close(&srv);
}

/* PUB -> SUB with a topic frame; the SUB filter works on the topic. */
static void pub_sub(void)
{
    err_t e = {0};
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://test-msg-pub-%d", (int)getpid());
    void *pub = sock(ZMQ_PUB, 0), *sub = sock(ZMQ_SUB, 2000);
    T(msg_bind(pub, ep, &e) == 0 && msg_connect(sub, ep, &e) == 0);
    zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "result.cam-2", 12);
    Moda__Result res = MODA__RESULT__INIT;
    res.camera_id = "cam-2";
    res.bank_version = 17;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_RESULT;
    env.result = &res;
    usleep(50000); /* let the subscription reach the PUB (slow joiner) */
    T(msg_publish(pub, "result.cam-1", &env, NULL, 0, &e) == 0);
    T(msg_publish(pub, "result.cam-2", &env, NULL, 0, &e) == 0);
    msg_t *m = NULL;
    T(msg_recv(sub, 0, NULL, MSG_TOPIC, &m, &e) == 0);
    T(m && m->has_topic && !strcmp(m->topic, "result.cam-2") && m->env->result->bank_version == 17);
    msg_free(&m);
    char longtopic[300];
    memset(longtopic, 't', sizeof longtopic - 1);
    longtopic[sizeof longtopic - 1] = '\0';
    T(msg_publish(pub, longtopic, &env, NULL, 0, &e) == ERR_RANGE);
    msg_socket_close(&sub);
    msg_socket_close(&pub);
}

int main(void)
{
    t_watchdog(60);
    ctx = zmq_ctx_new();
    msg_set_sender("test-msg");
    T(!strcmp(msg_sender(), "test-msg"));
    char ep[96];
    snprintf(ep, sizeof ep, "inproc://test-msg-%d", (int)getpid());
    roundtrip(ep);
    snprintf(ep, sizeof ep, "ipc:///tmp/test-msg-%d.sock", (int)getpid());
    roundtrip(ep);
    unlink(ep + 6); /* libzmq leaves ipc files behind */
    roundtrip("tcp://127.0.0.1:*");
    req_router();
    pub_sub();
    request_reply();
    bad_messages();
    transport_limit();
    endpoints_and_codes();
    zmq_ctx_term(ctx);
    return t_done("test_msg");
}
