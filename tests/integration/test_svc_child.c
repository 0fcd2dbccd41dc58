/* test_svc_child — a real service binary as a child process: bad messages on its control
 * socket (malformed protobuf, truncated multipart, oversized, unknown schema version) each get
 * an ErrorReply, one event=bad_msg log line and a msgs_bad count; Health is still answered;
 * SIGTERM ends it with exit 0; bad configuration exits 2 naming the key.
 *
 *   test_svc_child SERVICE_BINARY OUT_DIR
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "msg.h"
#include "t_check.h"

static pid_t spawn(const char *bin, const char *logpath, const char *const *args)
{
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) dup2(fd, 2);
        const char *argv[16] = {bin};
        for (int i = 0; args[i] && i < 14; i++) argv[i + 1] = args[i];
        execv(bin, (char **)argv);
        _exit(127);
    }
    return pid;
}

/* waitpid with a deadline; SIGKILL and -1 when the child does not exit in time. */
static int wait_exit(pid_t pid, int ms)
{
    for (int i = 0; i < ms / 10; i++) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

static uint8_t *pack(uint32_t schema, size_t declared, const char *sender, size_t *n)
{
    uint64_t sizes[4] = {4, 4, 4, 4};
    Moda__Header h = MODA__HEADER__INIT;
    h.schema_version = schema;
    h.sender = (char *)sender;
    h.part_sizes = sizes;
    h.n_part_sizes = declared;
    Moda__HealthRequest hr = MODA__HEALTH_REQUEST__INIT;
    Moda__Envelope e = MODA__ENVELOPE__INIT;
    e.header = &h;
    e.body_case = MODA__ENVELOPE__BODY_HEALTH_REQUEST;
    e.health_request = &hr;
    *n = moda__envelope__get_packed_size(&e);
    uint8_t *b = malloc(*n);
    moda__envelope__pack(&e, b);
    return b;
}

static msg_t *ask(void *d, const void *const *frames, const size_t *sizes, int n)
{
    for (int i = 0; i < n; i++) zmq_send(d, frames[i], sizes[i], i + 1 < n ? ZMQ_SNDMORE : 0);
    msg_t *m = NULL;
    err_t e = {0};
    if (msg_recv(d, 0, NULL, 0, &m, &e) != 0) msg_free(&m);
    return m;
}

static void expect_error(void *d, const void *const *f, const size_t *s, int n,
                         Moda__StatusCode code, const char *text)
{
    msg_t *m = ask(d, f, s, n);
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

static int count_lines(const char *path, const char *a)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, a)) n++;
    fclose(f);
    return n;
}

static void read_file(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, cap - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = '\0';
}

int main(int argc, char **argv)
{
    t_watchdog(60);
    if (argc < 3) {
        fprintf(stderr, "usage: test_svc_child SERVICE_BINARY OUT_DIR\n");
        return 2;
    }
    const char *bin = argv[1], *out = argv[2];
    char ep[96], logpath[512];
    snprintf(ep, sizeof ep, "ipc:///tmp/test-svc-child-%d.sock", (int)getpid());
    snprintf(logpath, sizeof logpath, "%s/svc_child.log", out);
    /* moda-ingest needs a camera to start; a synthetic one sending nowhere is enough. */
    char frames[96];
    snprintf(frames, sizeof frames, "ipc:///tmp/test-svc-child-%d-frames.sock", (int)getpid());
#define CAMERA "--camera-id", "c1", "--source", "synthetic:16x16", "--fps", "1", "--connect", frames

    pid_t pid = spawn(bin, logpath, (const char *[]){"--bind", ep, "--max-envelope-bytes", "4096", CAMERA, NULL});
    T(pid > 0);
    void *ctx = zmq_ctx_new();
    msg_sockopt_t so;
    msg_sockopt_default(&so);
    so.rcvtimeo_ms = 3000;
    so.sndtimeo_ms = 3000;
    so.reconnect_ivl_ms = 20;
    err_t e = {0};
    void *d = msg_socket_new(ctx, ZMQ_DEALER, &so, &e);
    T(msg_connect(d, ep, &e) == 0);

    /* The first Health is queued until the child binds (DEALER reconnects every 20 ms). */
    size_t n;
    uint8_t *b = pack(1, 0, "t", &n);
    msg_t *h = ask(d, (const void *[]){b}, (size_t[]){n}, 1);
    T(h && h->env->body_case == MODA__ENVELOPE__BODY_HEALTH_REPLY);
    msg_free(&h);
    free(b);

    const char junk[] = "\x0f\xff\xff\xff junk";
    expect_error(d, (const void *[]){junk}, (size_t[]){sizeof junk}, 1,
                 MODA__STATUS_CODE__STATUS_FORMAT, "not a valid protobuf");
    b = pack(1, 3, "t", &n);
    expect_error(d, (const void *[]){b, "abcd"}, (size_t[]){n, 4}, 2,
                 MODA__STATUS_CODE__STATUS_FORMAT, "truncated multipart: header declares 3");
    free(b);
    char big[6000];
    memset(big, 'y', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    b = pack(1, 0, big, &n);
    expect_error(d, (const void *[]){b}, (size_t[]){n}, 1, MODA__STATUS_CODE__STATUS_RANGE,
                 "exceeds limit 4096");
    free(b);
    b = pack(42, 0, "t", &n);
    expect_error(d, (const void *[]){b}, (size_t[]){n}, 1, MODA__STATUS_CODE__STATUS_VERSION,
                 "schema_version 42");
    free(b);

    b = pack(1, 0, "t", &n);
    h = ask(d, (const void *[]){b}, (size_t[]){n}, 1);
    free(b);
    T(h && h->env->body_case == MODA__ENVELOPE__BODY_HEALTH_REPLY);
    if (h && h->env->body_case == MODA__ENVELOPE__BODY_HEALTH_REPLY) {
        const Moda__HealthReply *r = h->env->health_reply;
        T(r->state == MODA__SERVICE_STATE__SERVICE_STATE_SERVING);
        T(counter(r, "msgs_bad") == 4);
        T(counter(r, "bad_control") == 4);
        T(counter(r, "health_requests") == 2);
        T(counter(r, "msgs_in") == 6);
        printf("service %s answered Health after 4 bad messages\n", r->service);
    }
    msg_free(&h);

    T(kill(pid, SIGTERM) == 0);
    int st = wait_exit(pid, 5000);
    T(st == 0);
    T(count_lines(logpath, "event=bad_msg socket=control") == 4);
    T(count_lines(logpath, "event=signal sig=15 action=stop") == 1);
    msg_socket_close(&d);
    zmq_ctx_term(ctx);

    /* Configuration errors: exit 2 with the key (and file line) in the message. */
    char text[4096];
    pid = spawn(bin, logpath, (const char *[]){"--hwm", "lots", NULL});
    T(wait_exit(pid, 5000) == 2);
    read_file(logpath, text, sizeof text);
    T_HAS(text, "--hwm: bad value 'lots' for 'hwm': not an integer");
    char conf[512];
    snprintf(conf, sizeof conf, "%s/svc_child.conf", out);
    FILE *f = fopen(conf, "w");
    if (f) {
        fputs("hwm = 10\nbindd = ipc:///tmp/x.sock\n", f);
        fclose(f);
    }
    pid = spawn(bin, logpath, (const char *[]){"--config", conf, NULL});
    T(wait_exit(pid, 5000) == 2);
    read_file(logpath, text, sizeof text);
    T_HAS(text, "svc_child.conf:2: unknown key 'bindd'");
    pid = spawn(bin, logpath, (const char *[]){"--config", "/nonexistent/moda.conf", NULL});
    T(wait_exit(pid, 5000) == 2);
    read_file(logpath, text, sizeof text);
    T_HAS(text, "config file '/nonexistent/moda.conf'");
    /* Unbindable endpoint: exits 1, message names the endpoint. */
    pid = spawn(bin, logpath, (const char *[]){"--bind", "tcp://256.0.0.1:5", CAMERA, NULL});
    T(wait_exit(pid, 5000) == 1);
    read_file(logpath, text, sizeof text);
    T_HAS(text, "bind tcp://256.0.0.1:5");
    return t_done("test_svc_child");
}
