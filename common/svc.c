/* svc.c — the service loop: control socket with Health, handler dispatch, signals, counters
 * (see svc.h).
 *
 * Signals: the handler only sets a flag and writes one byte to a non-blocking self-pipe whose
 * read end is in the zmq_poll set, so the loop wakes up and returns between handlers.
 */
#include "svc.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "log.h"

#define SVC_MAX_SOCKETS 32
#define SVC_MAX_TIMERS 8
#define SVC_MAX_COUNTERS 64
#define SVC_COUNTER_NAME 48

typedef struct svc_sock {
    void *sock;
    const char *name;
    svc_handler_fn fn;
    void *user;
} svc_sock_t;

typedef struct svc_timer {
    int interval_ms;
    int64_t due_us;
    svc_timer_fn fn;
    void *user;
} svc_timer_t;

typedef struct svc_counter_slot {
    char name[SVC_COUNTER_NAME];
    uint64_t value;
} svc_counter_slot_t;

typedef struct svc_ipc {
    char path[MSG_ENDPOINT_MAX];
    dev_t dev;
    ino_t ino;
} svc_ipc_t;

struct svc {
    svc_opts_t opts;
    void *ctx;
    void *control;
    char endpoint[MSG_ENDPOINT_MAX];
    svc_sock_t socks[SVC_MAX_SOCKETS];
    int nsocks;
    svc_timer_t timers[SVC_MAX_TIMERS];
    int ntimers;
    svc_counter_slot_t counters[SVC_MAX_COUNTERS + 1]; /* last = overflow */
    int ncounters;
    Moda__ServiceState state;
    char last_error[ERR_MSG_MAX];
    int64_t last_error_us;
    int64_t start_mono_us;
    svc_control_fn control_fn;
    void *control_user;
    atomic_int stop;
    int pipe_rd, pipe_wr;
    int owns_signals;
    svc_ipc_t ipc[SVC_MAX_SOCKETS + 1]; /* ipc files our binds created */
    int nipc;
};

/* Process-wide signal state: only one svc installs handlers at a time. */
static volatile sig_atomic_t g_signalled;
static volatile sig_atomic_t g_signal_fd = -1;
static struct sigaction g_old_term, g_old_int;

static void on_signal(int sig)
{
    int saved = errno;
    g_signalled = sig;
    int fd = g_signal_fd;
    if (fd >= 0) {
        char b = 's';
        ssize_t n = write(fd, &b, 1); /* async-signal-safe; a full pipe already wakes the loop */
        (void)n;
    }
    errno = saved;
}

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void svc_opts_default(svc_opts_t *o)
{
    memset(o, 0, sizeof *o);
    msg_sockopt_default(&o->sockopt);
    msg_limits_default(&o->limits);
    o->install_signals = 1;
}

int svc_opts_from_cfg(svc_opts_t *o, const char *name, const cfg_t *cfg, err_t *err)
{
    svc_opts_default(o);
    o->name = name;
    o->control_endpoint = cfg_str(cfg, "bind");
    int hwm = (int)cfg_int(cfg, "hwm");
    o->sockopt.sndhwm = o->sockopt.rcvhwm = hwm;
    o->sockopt.linger_ms = (int)cfg_int(cfg, "linger_ms");
    o->sockopt.reconnect_ivl_ms = (int)cfg_int(cfg, "reconnect_ivl_ms");
    o->sockopt.reconnect_ivl_max_ms = (int)cfg_int(cfg, "reconnect_ivl_max_ms");
    o->sockopt.max_frame_bytes = cfg_int(cfg, "max_frame_bytes");
    o->limits.max_envelope_bytes = (size_t)cfg_int(cfg, "max_envelope_bytes");
    o->limits.max_total_bytes = (size_t)cfg_int(cfg, "max_msg_bytes");
    int level = log_parse_level(cfg_str(cfg, "log_level"));
    if (level < 0)
        return err_set(err, ERR_CONFIG, "%s: bad value '%s' for 'log_level': expected "
                       "debug|info|warn|error|off", cfg_origin(cfg, "log_level"),
                       cfg_str(cfg, "log_level"));
    log_set_level(level);
    return 0;
}

static int install_signals(svc_t *s, err_t *err)
{
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0)
        return err_errno(err, ERR_IO, errno, "creating signal pipe");
    s->pipe_rd = fds[0];
    s->pipe_wr = fds[1];
    if (!s->opts.install_signals) return 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    g_signalled = 0;
    g_signal_fd = s->pipe_wr;
    if (sigaction(SIGTERM, &sa, &g_old_term) != 0 || sigaction(SIGINT, &sa, &g_old_int) != 0)
        return err_errno(err, ERR_IO, errno, "installing SIGTERM/SIGINT handlers");
    s->owns_signals = 1;
    return 0;
}

/* libzmq leaves ipc socket files behind. Remember each file a bind created and remove it at
 * exit, but only if it is still that file: a newer instance may have re-bound the path. */
static void remember_ipc_file(svc_t *s, void *sock)
{
    char ep[MSG_ENDPOINT_MAX];
    size_t n = sizeof ep;
    struct stat st;
    if (s->nipc == SVC_MAX_SOCKETS + 1) return;
    if (zmq_getsockopt(sock, ZMQ_LAST_ENDPOINT, ep, &n) != 0) return;
    if (strncmp(ep, "ipc://", 6) || ep[6] == '@') return;
    if (stat(ep + 6, &st) != 0 || !S_ISSOCK(st.st_mode)) return;
    svc_ipc_t *f = &s->ipc[s->nipc++];
    snprintf(f->path, sizeof f->path, "%s", ep + 6);
    f->dev = st.st_dev;
    f->ino = st.st_ino;
}

static void remove_ipc_files(svc_t *s)
{
    struct stat st;
    for (int i = 0; i < s->nipc; i++) {
        const svc_ipc_t *f = &s->ipc[i];
        if (stat(f->path, &st) == 0 && st.st_dev == f->dev && st.st_ino == f->ino) unlink(f->path);
    }
}

int svc_bind(svc_t *s, void *sock, const char *endpoint, err_t *err)
{
    int rc = msg_bind(sock, endpoint, err);
    if (!rc) remember_ipc_file(s, sock);
    return rc;
}

svc_t *svc_new(const svc_opts_t *o, err_t *err)
{
    if (!o || !o->name || !o->control_endpoint) {
        err_set(err, ERR_INVALID, "svc_new: name and control endpoint are required");
        return NULL;
    }
    svc_t *s = calloc(1, sizeof *s);
    if (!s) {
        err_set(err, ERR_NOMEM, "svc_new: out of memory");
        return NULL;
    }
    s->opts = *o;
    log_set_name(o->name);
    msg_set_sender(o->name);
    s->pipe_rd = s->pipe_wr = -1;
    s->state = MODA__SERVICE_STATE__SERVICE_STATE_STARTING;
    s->start_mono_us = mono_us();
    snprintf(s->counters[SVC_MAX_COUNTERS].name, SVC_COUNTER_NAME, "counters_overflow");
    /* Pre-create the standard counters so Health always lists them. */
    svc_counter(s, "msgs_in");
    svc_counter(s, "msgs_bad");
    svc_counter(s, "msgs_dropped");
    svc_counter(s, "health_requests");
    /* Signals first: whoever sees the control socket appear may already send SIGTERM. */
    if (install_signals(s, err)) {
        svc_destroy(&s);
        return NULL;
    }
    s->ctx = zmq_ctx_new();
    if (!s->ctx) {
        err_set(err, ERR_MSG, "zmq_ctx_new: %s", zmq_strerror(zmq_errno()));
        svc_destroy(&s);
        return NULL;
    }
    s->control = msg_socket_new(s->ctx, ZMQ_ROUTER, &s->opts.sockopt, err);
    if (!s->control || msg_bind(s->control, o->control_endpoint, err)) {
        err_wrap(err, "%s control socket", o->name);
        svc_destroy(&s);
        return NULL;
    }
    size_t n = sizeof s->endpoint;
    if (zmq_getsockopt(s->control, ZMQ_LAST_ENDPOINT, s->endpoint, &n) != 0)
        snprintf(s->endpoint, sizeof s->endpoint, "%s", o->control_endpoint);
    s->opts.control_endpoint = s->endpoint;
    remember_ipc_file(s, s->control);
    return s;
}

void svc_destroy(svc_t **sp)
{
    if (!sp || !*sp) return;
    svc_t *s = *sp;
    if (s->owns_signals) {
        sigaction(SIGTERM, &g_old_term, NULL);
        sigaction(SIGINT, &g_old_int, NULL);
        g_signal_fd = -1;
    }
    for (int i = 0; i < s->nsocks; i++) msg_socket_close(&s->socks[i].sock);
    msg_socket_close(&s->control);
    remove_ipc_files(s);
    if (s->ctx) zmq_ctx_term(s->ctx);
    if (s->pipe_rd >= 0) close(s->pipe_rd);
    if (s->pipe_wr >= 0) close(s->pipe_wr);
    free(s);
    *sp = NULL;
}

void *svc_ctx(svc_t *s)
{
    return s->ctx;
}

const svc_opts_t *svc_opts(const svc_t *s)
{
    return &s->opts;
}

const char *svc_control_endpoint(const svc_t *s)
{
    return s->endpoint;
}

void *svc_socket(svc_t *s, int type, err_t *err)
{
    return msg_socket_new(s->ctx, type, &s->opts.sockopt, err);
}

int svc_add_socket(svc_t *s, void *sock, const char *name, svc_handler_fn fn, void *user,
                   err_t *err)
{
    if (!sock || !fn || !name) return err_set(err, ERR_INVALID, "svc_add_socket: missing argument");
    if (s->nsocks == SVC_MAX_SOCKETS)
        return err_set(err, ERR_RANGE, "svc_add_socket %s: more than %d sockets", name,
                       SVC_MAX_SOCKETS);
    s->socks[s->nsocks++] = (svc_sock_t){sock, name, fn, user};
    return 0;
}

int svc_add_timer(svc_t *s, int interval_ms, svc_timer_fn fn, void *user, err_t *err)
{
    if (interval_ms < 1 || !fn) return err_set(err, ERR_INVALID, "svc_add_timer: bad argument");
    if (s->ntimers == SVC_MAX_TIMERS)
        return err_set(err, ERR_RANGE, "svc_add_timer: more than %d timers", SVC_MAX_TIMERS);
    s->timers[s->ntimers++] =
        (svc_timer_t){interval_ms, mono_us() + (int64_t)interval_ms * 1000, fn, user};
    return 0;
}

void svc_set_control_handler(svc_t *s, svc_control_fn fn, void *user)
{
    s->control_fn = fn;
    s->control_user = user;
}

uint64_t *svc_counter(svc_t *s, const char *name)
{
    for (int i = 0; i < s->ncounters; i++)
        if (!strcmp(s->counters[i].name, name)) return &s->counters[i].value;
    if (s->ncounters == SVC_MAX_COUNTERS || strlen(name) >= SVC_COUNTER_NAME)
        return &s->counters[SVC_MAX_COUNTERS].value;
    svc_counter_slot_t *c = &s->counters[s->ncounters++];
    snprintf(c->name, sizeof c->name, "%s", name);
    c->value = 0;
    return &c->value;
}

void svc_count(svc_t *s, const char *name, uint64_t delta)
{
    *svc_counter(s, name) += delta;
}

uint64_t svc_counter_get(svc_t *s, const char *name)
{
    for (int i = 0; i < s->ncounters; i++)
        if (!strcmp(s->counters[i].name, name)) return s->counters[i].value;
    return 0;
}

void svc_set_state(svc_t *s, Moda__ServiceState st)
{
    s->state = st;
}

void svc_error(svc_t *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->last_error, sizeof s->last_error, fmt, ap);
    va_end(ap);
    s->last_error_us = msg_now_us();
    log_error("event=error msg=\"%s\"", s->last_error);
}

int svc_ncounters(const svc_t *s)
{
    return s->ncounters + 1;
}

void svc_health(svc_t *s, Moda__HealthReply *r, Moda__Status *st, Moda__Counter *store,
                Moda__Counter **ptrs)
{
    moda__status__init(st);
    moda__health_reply__init(r);
    r->status = st;
    r->service = (char *)s->opts.name;
    r->version = (char *)MODA_VERSION;
    r->uptime_us = (uint64_t)(mono_us() - s->start_mono_us);
    r->state = s->state;
    r->last_error = s->last_error;
    r->last_error_time_us = s->last_error_us;
    r->schema_version = MSG_SCHEMA_VERSION;
    int n = 0;
    for (int i = 0; i <= SVC_MAX_COUNTERS; i++) {
        if (i < s->ncounters || (i == SVC_MAX_COUNTERS && s->counters[i].value)) {
            moda__counter__init(&store[n]);
            store[n].name = s->counters[i].name;
            store[n].value = s->counters[i].value;
            ptrs[n] = &store[n];
            n++;
        }
    }
    r->n_counters = (size_t)n;
    r->counters = ptrs;
}

static int sock_type(void *sock)
{
    int t = -1;
    size_t n = sizeof t;
    if (zmq_getsockopt(sock, ZMQ_TYPE, &t, &n) != 0) return -1;
    return t;
}

int svc_recv(svc_t *s, void *sock, const char *name, msg_t **out)
{
    *out = NULL;
    int type = sock_type(sock);
    msg_t *m = NULL;
    err_t e = {0};
    int flags = MSG_DONTWAIT | (type == ZMQ_SUB || type == ZMQ_XSUB ? MSG_TOPIC : 0);
    int rc = msg_recv(sock, type == ZMQ_ROUTER, &s->opts.limits, flags, &m, &e);
    if (!m) {
        if (rc != ERR_TIMEOUT && rc != ERR_INTERRUPTED)
            log_warn("event=recv_failed socket=%s code=%d msg=\"%s\"", name, rc, e.msg);
        return rc ? rc : ERR_TIMEOUT;
    }
    svc_count(s, "msgs_in", 1);
    if (rc == 0) {
        *out = m;
        return 0;
    }
    svc_count(s, "msgs_bad", 1);
    char cname[SVC_COUNTER_NAME];
    snprintf(cname, sizeof cname, "bad_%s", name);
    svc_count(s, cname, 1);
    int answer = type == ZMQ_ROUTER || type == ZMQ_REP;
    log_warn("event=bad_msg socket=%s code=%s bytes=%zu frames=%d action=%s msg=\"%s\"", name,
             msg_status_name(msg_status_code(rc)), m->wire_bytes, m->nframes, answer ? "error_reply" : "drop", e.msg);
    if (answer) {
        err_t re = {0};
        if (msg_reply_error(sock, m, rc, e.msg, &re)) {
            svc_count(s, "replies_failed", 1);
            log_warn("event=reply_failed socket=%s msg=\"%s\"", name, re.msg);
        }
    } else {
        svc_count(s, "msgs_dropped", 1);
    }
    msg_free(&m);
    return rc;
}

static int handle_control(svc_t *s)
{
    msg_t *m;
    if (svc_recv(s, s->control, "control", &m)) return 0;
    err_t e = {0};
    int rc = 0;
    if (m->env->body_case == MODA__ENVELOPE__BODY_HEALTH_REQUEST) {
        svc_count(s, "health_requests", 1);
        Moda__HealthReply hr;
        Moda__Status st;
        Moda__Counter store[SVC_MAX_COUNTERS + 1];
        Moda__Counter *ptrs[SVC_MAX_COUNTERS + 1];
        svc_health(s, &hr, &st, store, ptrs);
        Moda__Envelope env = MODA__ENVELOPE__INIT;
        env.body_case = MODA__ENVELOPE__BODY_HEALTH_REPLY;
        env.health_reply = &hr;
        rc = msg_reply(s->control, m, &env, NULL, 0, &e);
    } else if (s->control_fn &&
               (rc = s->control_fn(s, s->control, m, s->control_user)) != ERR_UNSUPPORTED) {
        msg_free(&m);
        return rc;
    } else {
        char text[128];
        snprintf(text, sizeof text, "%s control socket does not handle %s", s->opts.name,
                 msg_body_name(m->env->body_case));
        svc_count(s, "msgs_unsupported", 1);
        rc = msg_reply_error(s->control, m, ERR_UNSUPPORTED, text, &e);
    }
    if (rc) {
        svc_count(s, "replies_failed", 1);
        log_warn("event=reply_failed socket=control msg=\"%s\"", e.msg);
    }
    msg_free(&m);
    return 0;
}

void svc_stop(svc_t *s)
{
    atomic_store(&s->stop, 1);
    if (s->pipe_wr >= 0) {
        char b = 'q';
        ssize_t n = write(s->pipe_wr, &b, 1);
        (void)n;
    }
}

static int stopping(svc_t *s)
{
    if (s->owns_signals && g_signalled) {
        log_info("event=signal sig=%d action=stop", (int)g_signalled);
        g_signalled = 0;
        atomic_store(&s->stop, 1);
    }
    return atomic_load(&s->stop);
}

int svc_run(svc_t *s, err_t *err)
{
    zmq_pollitem_t items[SVC_MAX_SOCKETS + 2];
    int rc = 0;
    s->state = MODA__SERVICE_STATE__SERVICE_STATE_SERVING;
    log_info("event=start control=%s version=%s schema=%u", s->endpoint, MODA_VERSION,
             MSG_SCHEMA_VERSION);
    while (!rc && !stopping(s)) {
        int n = 0;
        items[n++] = (zmq_pollitem_t){NULL, s->pipe_rd, ZMQ_POLLIN, 0};
        items[n++] = (zmq_pollitem_t){s->control, 0, ZMQ_POLLIN, 0};
        for (int i = 0; i < s->nsocks; i++)
            items[n++] = (zmq_pollitem_t){s->socks[i].sock, 0, ZMQ_POLLIN, 0};
        int64_t now = mono_us();
        long timeout_ms = 1000; /* upper bound so a lost wake-up costs at most a second */
        for (int i = 0; i < s->ntimers; i++) {
            int64_t left = (s->timers[i].due_us - now + 999) / 1000;
            if (left < timeout_ms) timeout_ms = left < 0 ? 0 : (long)left;
        }
        int k = zmq_poll(items, n, timeout_ms);
        if (k < 0) {
            if (zmq_errno() == EINTR) continue;
            rc = err_set(err, ERR_MSG, "zmq_poll: %s", zmq_strerror(zmq_errno()));
            break;
        }
        if (items[0].revents & ZMQ_POLLIN) {
            char buf[64];
            while (read(s->pipe_rd, buf, sizeof buf) > 0) {
            }
            if (stopping(s)) break;
        }
        if ((items[1].revents & ZMQ_POLLIN) && (rc = handle_control(s)) != 0)
            err_set(err, rc, "control handler stopped the service: %s", err_str(rc));
        for (int i = 0; !rc && i < s->nsocks; i++) {
            if (!(items[2 + i].revents & ZMQ_POLLIN)) continue;
            rc = s->socks[i].fn(s, s->socks[i].sock, s->socks[i].user);
            if (rc)
                err_set(err, rc, "handler for socket %s stopped the service: %s",
                        s->socks[i].name, err_str(rc));
        }
        now = mono_us();
        for (int i = 0; !rc && i < s->ntimers; i++) {
            svc_timer_t *t = &s->timers[i];
            if (now < t->due_us) continue;
            t->due_us = now + (int64_t)t->interval_ms * 1000;
            rc = t->fn(s, t->user);
            if (rc) err_set(err, rc, "timer stopped the service: %s", err_str(rc));
        }
    }
    s->state = MODA__SERVICE_STATE__SERVICE_STATE_STOPPING;
    log_info("event=stop code=%d msgs_in=%llu msgs_bad=%llu", rc,
             (unsigned long long)svc_counter_get(s, "msgs_in"),
             (unsigned long long)svc_counter_get(s, "msgs_bad"));
    return rc;
}
