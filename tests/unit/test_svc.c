/* test_svc — common/svc in-process: the loop runs in a thread; a client sends malformed,
 * truncated, oversized and unknown-version messages to the control socket (each must get an
 * ErrorReply with the right status) and to a registered PULL socket (each dropped), then Health
 * must still be answered with counters that count every one of them, the log must hold one
 * event=bad_msg line per bad message, and svc_stop / SIGTERM must end svc_run with 0.
 *
 *   test_svc [OUT_DIR]    (log captured in OUT_DIR/test_svc.log; default /tmp)
 */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "log.h"
#include "svc.h"
#include "t_check.h"

typedef struct run_arg {
    svc_t *svc;
    int rc;
    err_t err;
} run_arg_t;

static void *run_thread(void *p)
{
    run_arg_t *a = p;
    a->rc = svc_run(a->svc, &a->err);
    return NULL;
}

static int on_data(svc_t *s, void *sock, void *user)
{
    (void)user;
    msg_t *m;
    if (svc_recv(s, sock, "data", &m)) return 0;
    if (m->env->body_case == MODA__ENVELOPE__BODY_FRAME) svc_count(s, "frames_ok", 1);
    msg_free(&m);
    return 0;
}

static int on_tick(svc_t *s, void *user)
{
    (void)user;
    svc_count(s, "ticks", 1);
    return 0;
}

static int on_control(svc_t *s, void *sock, const msg_t *req, void *user)
{
    (void)user;
    if (req->env->body_case != MODA__ENVELOPE__BODY_LIST_QUEUE_REQUEST) return ERR_UNSUPPORTED;
    svc_error(s, "control handler saw %s", msg_body_name(req->env->body_case));
    Moda__Status st = MODA__STATUS__INIT;
    Moda__ListQueueReply r = MODA__LIST_QUEUE_REPLY__INIT;
    r.status = &st;
    Moda__Envelope e = MODA__ENVELOPE__INIT;
    e.body_case = MODA__ENVELOPE__BODY_LIST_QUEUE_REPLY;
    e.list_queue_reply = &r;
    err_t err = {0};
    msg_reply(sock, req, &e, NULL, 0, &err);
    return 0;
}

static void *g_ctx;

static uint8_t *pack(uint32_t schema, size_t nparts_declared, Moda__Envelope__BodyCase body,
                     const char *sender, size_t *n)
{
    uint64_t sizes[4] = {4, 4, 4, 4};
    Moda__Header h = MODA__HEADER__INIT;
    h.schema_version = schema;
    h.message_id = 5;
    h.sender = (char *)sender;
    h.part_sizes = sizes;
    h.n_part_sizes = nparts_declared;
    Moda__HealthRequest hr = MODA__HEALTH_REQUEST__INIT;
    Moda__Frame fr = MODA__FRAME__INIT;
    Moda__ListQueueRequest lq = MODA__LIST_QUEUE_REQUEST__INIT;
    Moda__Envelope e = MODA__ENVELOPE__INIT;
    e.header = &h;
    e.body_case = body;
    if (body == MODA__ENVELOPE__BODY_HEALTH_REQUEST) e.health_request = &hr;
    if (body == MODA__ENVELOPE__BODY_FRAME) e.frame = &fr;
    if (body == MODA__ENVELOPE__BODY_LIST_QUEUE_REQUEST) e.list_queue_request = &lq;
    *n = moda__envelope__get_packed_size(&e);
    uint8_t *b = malloc(*n);
    moda__envelope__pack(&e, b);
    return b;
}

/* Send frames on a DEALER, wait for one reply (2 s), return it (caller frees) or NULL. */
static msg_t *ask(void *d, const void *const *frames, const size_t *sizes, int n)
{
    for (int i = 0; i < n; i++) zmq_send(d, frames[i], sizes[i], i + 1 < n ? ZMQ_SNDMORE : 0);
    msg_t *m = NULL;
    err_t e = {0};
    if (msg_recv(d, 0, NULL, 0, &m, &e) != 0) msg_free(&m);
    return m;
}

static void expect_error(void *d, const void *const *frames, const size_t *sizes, int n,
                         Moda__StatusCode code, const char *text)
{
    msg_t *m = ask(d, frames, sizes, n);
    T(m && m->env->body_case == MODA__ENVELOPE__BODY_ERROR);
    if (m && m->env->body_case == MODA__ENVELOPE__BODY_ERROR) {
        T(m->env->error->status->code == code);
        T_HAS(m->env->error->status->message, text);
    }
    msg_free(&m);
}

static uint64_t counter(const Moda__HealthReply *r, const char *name)
{
    for (size_t i = 0; i < r->n_counters; i++)
        if (!strcmp(r->counters[i]->name, name)) return r->counters[i]->value;
    return (uint64_t)-1;
}

static msg_t *health(void *d)
{
    size_t n;
    uint8_t *b = pack(1, 0, MODA__ENVELOPE__BODY_HEALTH_REQUEST, "t", &n);
    msg_t *m = ask(d, (const void *[]){b}, (size_t[]){n}, 1);
    free(b);
    if (m && m->env->body_case != MODA__ENVELOPE__BODY_HEALTH_REPLY) msg_free(&m);
    return m;
}

static int count_lines(const char *path, const char *a, const char *b)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, a) && (!b || strstr(line, b))) n++;
    fclose(f);
    return n;
}

static void bad_input(const char *logpath)
{
    int pid = (int)getpid();
    char cep[96], dep[96];
    snprintf(cep, sizeof cep, "ipc:///tmp/test-svc-%d.sock", pid);
    snprintf(dep, sizeof dep, "ipc:///tmp/test-svc-data-%d.sock", pid);
    err_t e = {0};
    svc_opts_t o;
    svc_opts_default(&o);
    o.name = "testsvc";
    o.control_endpoint = cep;
    o.install_signals = 0;
    o.limits.max_envelope_bytes = 4096;
    svc_t *s = svc_new(&o, &e);
    T(s != NULL);
    if (!s) {
        fprintf(stderr, "svc_new: %s\n", e.msg);
        return;
    }
    T(!strcmp(svc_control_endpoint(s), cep));
    void *pull = svc_socket(s, ZMQ_PULL, &e);
    T(pull && svc_bind(s, pull, dep, &e) == 0);
    T(svc_add_socket(s, pull, "data", on_data, NULL, &e) == 0);
    T(svc_add_timer(s, 10, on_tick, NULL, &e) == 0);
    T(svc_add_timer(s, 0, on_tick, NULL, &e) == ERR_INVALID);
    svc_set_control_handler(s, on_control, NULL);

    /* Capture the service's log lines. */
    fflush(stderr);
    int saved = dup(2), fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    T(fd >= 0);
    dup2(fd, 2);
    close(fd);

    run_arg_t ra = {s, -1, {0}};
    pthread_t th;
    pthread_create(&th, NULL, run_thread, &ra);

    msg_sockopt_t so;
    msg_sockopt_default(&so);
    so.rcvtimeo_ms = 2000;
    so.sndtimeo_ms = 2000;
    void *d = msg_socket_new(g_ctx, ZMQ_DEALER, &so, &e);
    void *push = msg_socket_new(g_ctx, ZMQ_PUSH, &so, &e);
    T(msg_connect(d, cep, &e) == 0 && msg_connect(push, dep, &e) == 0);

    const char junk[] = "\x0f\xff\xff\xff junk";
    expect_error(d, (const void *[]){junk}, (size_t[]){sizeof junk}, 1,
                 MODA__STATUS_CODE__STATUS_FORMAT, "not a valid protobuf");
    size_t n;
    uint8_t *b = pack(1, 2, MODA__ENVELOPE__BODY_HEALTH_REQUEST, "t", &n);
    expect_error(d, (const void *[]){b, "abcd"}, (size_t[]){n, 4}, 2,
                 MODA__STATUS_CODE__STATUS_FORMAT, "truncated multipart");
    free(b);
    char *big = malloc(5000);
    memset(big, 'x', 4999);
    big[4999] = '\0';
    b = pack(1, 0, MODA__ENVELOPE__BODY_HEALTH_REQUEST, big, &n);
    expect_error(d, (const void *[]){b}, (size_t[]){n}, 1, MODA__STATUS_CODE__STATUS_RANGE,
                 "exceeds limit 4096");
    free(b);
    free(big);
    b = pack(7, 0, MODA__ENVELOPE__BODY_HEALTH_REQUEST, "t", &n);
    expect_error(d, (const void *[]){b}, (size_t[]){n}, 1, MODA__STATUS_CODE__STATUS_VERSION,
                 "schema_version 7");
    free(b);
    /* A valid request the control socket has no use for. */
    b = pack(1, 0, MODA__ENVELOPE__BODY_FRAME, "t", &n);
    expect_error(d, (const void *[]){b}, (size_t[]){n}, 1, MODA__STATUS_CODE__STATUS_UNSUPPORTED,
                 "does not handle frame");
    free(b);
    /* The registered control handler gets other requests. */
    b = pack(1, 0, MODA__ENVELOPE__BODY_LIST_QUEUE_REQUEST, "t", &n);
    msg_t *r = ask(d, (const void *[]){b}, (size_t[]){n}, 1);
    T(r && r->env->body_case == MODA__ENVELOPE__BODY_LIST_QUEUE_REPLY && r->request_id > 0 &&
      r->env->header->reply_to == 5);
    msg_free(&r);
    free(b);

    /* Data socket: one bad message (dropped) and one good one. */
    zmq_send(push, junk, sizeof junk, 0);
    b = pack(1, 0, MODA__ENVELOPE__BODY_FRAME, "t", &n);
    zmq_send(push, b, n, 0);
    free(b);

    msg_t *h = NULL;
    for (int i = 0; i < 100; i++) { /* until the PULL side saw both and a tick (<= 2 s) */
        msg_free(&h);
        h = health(d);
        if (!h) break;
        uint64_t ticks = counter(h->env->health_reply, "ticks"); /* -1 until the first tick */
        if (counter(h->env->health_reply, "frames_ok") == 1 && ticks != (uint64_t)-1) break;
        usleep(20000);
    }
    T(h != NULL);
    if (h) {
        const Moda__HealthReply *hr = h->env->health_reply;
        T(!strcmp(hr->service, "testsvc") && !strcmp(hr->version, MODA_VERSION));
        T(hr->state == MODA__SERVICE_STATE__SERVICE_STATE_SERVING);
        T(hr->schema_version == MSG_SCHEMA_VERSION);
        T(hr->uptime_us > 0);
        T(counter(hr, "msgs_bad") == 5);
        T(counter(hr, "bad_control") == 4);
        T(counter(hr, "bad_data") == 1);
        T(counter(hr, "msgs_dropped") == 1);
        T(counter(hr, "frames_ok") == 1);
        T(counter(hr, "msgs_unsupported") == 1);
        T(counter(hr, "health_requests") >= 1);
        T(counter(hr, "msgs_in") == 6 + 2 + counter(hr, "health_requests"));
        T(counter(hr, "ticks") >= 1 && counter(hr, "ticks") < 100000);
        T_HAS(hr->last_error, "control handler saw list_queue_request");
        T(hr->last_error_time_us > 0);
    }
    msg_free(&h);

    svc_stop(s);
    pthread_join(th, NULL);
    T(ra.rc == 0);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    /* Checks that failed while stderr was captured: show them. */
    FILE *lf = fopen(logpath, "r");
    char line[4096];
    while (lf && fgets(line, sizeof line, lf))
        if (!strncmp(line, "FAIL ", 5)) fputs(line, stderr);
    if (lf) fclose(lf);
    T(count_lines(logpath, "event=bad_msg", NULL) == 5);
    T(count_lines(logpath, "event=bad_msg socket=control code=STATUS_FORMAT", "action=error_reply") == 2);
    T(count_lines(logpath, "event=bad_msg socket=control code=STATUS_RANGE", NULL) == 1);
    T(count_lines(logpath, "event=bad_msg socket=control code=STATUS_VERSION", NULL) == 1);
    T(count_lines(logpath, "event=bad_msg socket=data", "action=drop") == 1);
    T(count_lines(logpath, "svc=testsvc event=stop code=0", NULL) == 1);
    msg_socket_close(&d);
    msg_socket_close(&push);
    T(access(dep + 6, F_OK) == 0);
    svc_destroy(&s);
    T(s == NULL);
    T(access(cep + 6, F_OK) != 0 && access(dep + 6, F_OK) != 0);
}

/* SIGTERM delivered to the process stops a loop that installed the handlers, with rc 0. */
static void sigterm_stops(void)
{
    char cep[96];
    snprintf(cep, sizeof cep, "ipc:///tmp/test-svc-sig-%d.sock", (int)getpid());
    err_t e = {0};
    svc_opts_t o;
    svc_opts_default(&o);
    o.name = "sigsvc";
    o.control_endpoint = cep;
    svc_t *s = svc_new(&o, &e);
    T(s != NULL);
    if (!s) return;
    /* Address in use: a second service on the same tcp port fails cleanly. */
    svc_opts_t o2 = o;
    o2.install_signals = 0;
    o2.control_endpoint = "tcp://127.0.0.1:*";
    svc_t *s2 = svc_new(&o2, &e);
    T(s2 != NULL);
    if (s2) {
        char ep[MSG_ENDPOINT_MAX];
        snprintf(ep, sizeof ep, "%s", svc_control_endpoint(s2));
        T(strncmp(ep, "tcp://127.0.0.1:", 16) == 0 && strcmp(ep, "tcp://127.0.0.1:*"));
        o2.control_endpoint = ep;
        svc_t *s3 = svc_new(&o2, &e);
        T(s3 == NULL);
        T_HAS(e.msg, "sigsvc control socket: bind tcp://127.0.0.1:");
        svc_destroy(&s2);
    }
    run_arg_t ra = {s, -1, {0}};
    pthread_t th;
    int saved = log_get_level();
    log_set_level(LOG_OFF);
    pthread_create(&th, NULL, run_thread, &ra);
    usleep(50000);
    kill(getpid(), SIGTERM);
    pthread_join(th, NULL);
    log_set_level(saved);
    T(ra.rc == 0);
    svc_destroy(&s);
    /* Handlers restored: SIGTERM is back to its previous (here: default) disposition. */
    struct sigaction sa;
    sigaction(SIGTERM, NULL, &sa);
    T(sa.sa_handler == SIG_DFL);
}

/* The ipc socket file is removed at svc_destroy, unless a newer instance re-bound the path. */
static void ipc_file_cleanup(void)
{
    char ep[96];
    snprintf(ep, sizeof ep, "ipc:///tmp/test-svc-file-%d.sock", (int)getpid());
    const char *path = ep + 6;
    err_t e = {0};
    svc_opts_t o;
    svc_opts_default(&o);
    o.name = "filesvc";
    o.control_endpoint = ep;
    o.install_signals = 0;
    svc_t *a = svc_new(&o, &e);
    T(a != NULL && access(path, F_OK) == 0);
    svc_t *b = svc_new(&o, &e); /* libzmq replaces the file: b owns the path now */
    T(b != NULL);
    svc_destroy(&a);
    T(access(path, F_OK) == 0);
    svc_destroy(&b);
    T(access(path, F_OK) != 0);
}

int main(int argc, char **argv)
{
    t_watchdog(60);
    const char *out = argc > 1 ? argv[1] : "/tmp";
    char logpath[512];
    snprintf(logpath, sizeof logpath, "%s/test_svc-%d.log", out, (int)getpid());
    g_ctx = zmq_ctx_new();
    msg_set_sender("test-svc");
    bad_input(logpath);
    sigterm_stops();
    ipc_file_cleanup();
    zmq_ctx_term(g_ctx);
    return t_done("test_svc");
}
