/* moda up — run the five services on one machine as supervised child processes.
 *
 *   moda up [--config FILE] [--data DIR] [--camera synthetic:WxH|folder:DIR] [--fps N]
 *
 * Where: every service binary is looked up next to this executable (<bin>/moda-<svc>).
 * Endpoints are ipc:// sockets in a short runtime dir (--run-dir, default /tmp/moda-<uid>;
 * ZeroMQ ipc paths must stay under ~100 chars); registry and label data live under --data
 * (default ./out/moda-data), logs in <data>/logs/<svc>.log.
 * Invariants: services start in dependency order (registry, label, train, infer, ingest) and
 * each must answer Health before the next starts; <run-dir>/up.json always lists the live
 * pids (rewritten on every restart, removed at exit) so `moda status` finds them; a child that
 * dies is restarted with doubling backoff (reset once it stayed up 30 s); SIGINT/SIGTERM stop
 * the children in reverse order (SIGTERM, wait --stop-timeout-ms, then SIGKILL) and exit 0.
 * Children get PR_SET_PDEATHSIG so they do not outlive a killed `moda up`.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "cfg.h"
#include "client.h"
#include "cmds.h"
#include "json.h"
#include "msg.h"
#include "paths.h"

enum { UP_NSVC = 5, UP_MAXARGS = 64, UP_PATH = 512 };

static const cfg_key_t keys[] = {
    {"data", CFG_STRING, "out/moda-data", 0, 400, "registry data, label store and logs go here"},
    {"run_dir", CFG_STRING, "", 0, 80, "ipc sockets and up.json (default /tmp/moda-<uid>)"},
    {"camera", CFG_STRING, "synthetic:320x240", 0, 400, "camera source: synthetic:WxH | folder:DIR | video:FILE | rtsp://..."},
    {"camera_id", CFG_STRING, "cam0", 0, 32, "the camera's id"},
    {"fps", CFG_DOUBLE, "2", 0, 1000, "camera frames per second"},
    {"model", CFG_STRING, "", 0, 400, "SAM weights file for infer (default: $MODA_MODEL, else <repo>/.deps/models/mobile_sam.safetensors)"},
    {"log_level", CFG_STRING, "info", 0, 16, "log level passed to every service"},
    {"start_timeout_ms", CFG_INT, "60000", 100, 600000, "each service must answer Health within this"},
    {"stop_timeout_ms", CFG_INT, "5000", 10, 600000, "SIGTERM → SIGKILL grace at shutdown"},
    {"backoff_ms", CFG_INT, "500", 1, 600000, "first restart delay after a crash (doubles, capped)"},
    {"backoff_max_ms", CFG_INT, "30000", 1, 3600000, "cap of the restart delay"},
    {"registry_args", CFG_STRING, "", 0, 2000, "extra arguments for moda-registry (space separated)"},
    {"label_args", CFG_STRING, "", 0, 2000, "extra arguments for moda-label"},
    {"train_args", CFG_STRING, "", 0, 2000, "extra arguments for moda-train"},
    {"infer_args", CFG_STRING, "", 0, 2000, "extra arguments for moda-infer"},
    {"ingest_args", CFG_STRING, "", 0, 2000, "extra arguments for moda-ingest"},
    CFG_END,
};

typedef struct up_svc {
    const char *name;
    char bin[UP_PATH];
    char ctl[UP_PATH]; /* control/health endpoint */
    char log[UP_PATH];
    char *argv[UP_MAXARGS];
    int argc;
    pid_t pid;
    int restarts;
    int64_t started_ms;
    int64_t restart_at_ms; /* > 0: dead, restart then */
    int64_t backoff_ms;
} up_svc_t;

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int mkdir_p(const char *path)
{
    char buf[UP_PATH];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return -1;
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0755) && errno != EEXIST) return -1;
        *p = '/';
    }
    return mkdir(buf, 0755) && errno != EEXIST ? -1 : 0;
}

static void add_arg(up_svc_t *s, const char *a)
{
    if (s->argc < UP_MAXARGS - 1) s->argv[s->argc++] = strdup(a);
    s->argv[s->argc] = NULL;
}

static void add_opt(up_svc_t *s, const char *k, const char *v)
{
    add_arg(s, k);
    add_arg(s, v);
}

/* Split `extra` on spaces into more arguments. */
static void add_extra(up_svc_t *s, const char *extra)
{
    char *copy = strdup(extra), *save = NULL;
    for (char *t = strtok_r(copy, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) add_arg(s, t);
    free(copy);
}

/* Health probe: 0 when the service at ep answered a HealthReply within timeout_ms. */
static int probe_health(void *ctx, const char *ep, int timeout_ms)
{
    err_t err = {0};
    client_t c;
    msg_t *reply = NULL;
    int rc = client_open(&c, ctx, ep, "health", timeout_ms, &err);
    if (!rc) rc = client_health(&c, &reply, &err);
    msg_free(&reply);
    client_close(&c);
    return rc ? -1 : 0;
}

static void print_log_tail(const up_svc_t *s, int lines)
{
    FILE *f = fopen(s->log, "rb");
    if (!f) return;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f), from = sz > 4000 ? sz - 4000 : 0;
    fseek(f, from, SEEK_SET);
    static char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = buf + n;
    int seen = 0;
    while (p > buf) {
        if (p[-1] == '\n' && p != buf + n && ++seen >= lines) break;
        p--;
    }
    fprintf(stderr, "---- last lines of %s ----\n%s%s----\n", s->log, p, n && buf[n - 1] != '\n' ? "\n" : "");
}

static int spawn(up_svc_t *s)
{
    fflush(NULL);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        /* own process group: a terminal's Ctrl-C reaches only `moda up`, which stops the
         * children in order; PDEATHSIG: a killed `moda up` takes its children with it */
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent) _exit(127);
        int fd = open(s->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        int nul = open("/dev/null", O_RDONLY);
        if (nul >= 0) {
            dup2(nul, 0);
            close(nul);
        }
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGPIPE, SIG_DFL); /* an ignored signal would survive exec */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execv(s->bin, s->argv);
        fprintf(stderr, "moda up: exec %s: %s\n", s->bin, strerror(errno));
        _exit(127);
    }
    s->pid = pid;
    s->started_ms = now_ms();
    s->restart_at_ms = 0;
    return 0;
}

static int write_state(const char *path, const char *run_dir, const char *data, up_svc_t *svc)
{
    json_writer_t w;
    json_w_init(&w);
    json_w_begin_obj(&w);
    json_w_key(&w, "pid");
    json_w_int(&w, getpid());
    json_w_key(&w, "run_dir");
    json_w_string(&w, run_dir);
    json_w_key(&w, "data");
    json_w_string(&w, data);
    json_w_key(&w, "services");
    json_w_begin_arr(&w);
    for (int i = 0; i < UP_NSVC; i++) {
        json_w_begin_obj(&w);
        json_w_key(&w, "name");
        json_w_string(&w, svc[i].name);
        json_w_key(&w, "endpoint");
        json_w_string(&w, svc[i].ctl);
        json_w_key(&w, "pid");
        json_w_int(&w, svc[i].pid);
        json_w_key(&w, "restarts");
        json_w_int(&w, svc[i].restarts);
        json_w_key(&w, "log");
        json_w_string(&w, svc[i].log);
        json_w_end_obj(&w);
    }
    json_w_end_arr(&w);
    json_w_end_obj(&w);
    err_t err = {0};
    size_t len = 0;
    char *text = json_w_finish(&w, &len, &err);
    if (!text) return -1;
    char tmp[UP_PATH + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    int rc = -1;
    if (f) {
        rc = fwrite(text, 1, len, f) == len && fputc('\n', f) != EOF ? 0 : -1;
        if (fclose(f)) rc = -1;
        if (!rc) rc = rename(tmp, path) ? -1 : 0;
    }
    free(text);
    return rc;
}

/* Another `moda up` already owns this run dir? */
static pid_t running_up(const char *state_path)
{
    FILE *f = fopen(state_path, "rb");
    if (!f) return 0;
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    err_t err = {0};
    json_t *j = json_parse(buf, n, &err);
    int64_t pid = 0;
    if (j) json_get_int64(json_get(j, "pid"), &pid, "pid", &err);
    json_free(&j);
    if (pid > 0 && pid != getpid() && kill((pid_t)pid, 0) == 0) return (pid_t)pid;
    return 0;
}

static const char *describe_exit(int status, char *buf, size_t n)
{
    if (WIFSIGNALED(status))
        snprintf(buf, n, "killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        snprintf(buf, n, "exited with status %d", WEXITSTATUS(status));
    return buf;
}

/* Reap any dead children; schedule restarts. Returns how many died. */
static int reap(up_svc_t *svc, int quiet, int64_t bo0, int64_t bomax)
{
    int died = 0, status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (int i = 0; i < UP_NSVC; i++) {
            up_svc_t *s = &svc[i];
            if (s->pid != pid) continue;
            char why[96];
            int64_t t = now_ms();
            if (t - s->started_ms > 30000) s->backoff_ms = 0; /* it had recovered */
            s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : bo0;
            if (s->backoff_ms > bomax) s->backoff_ms = bomax;
            s->pid = 0;
            s->restart_at_ms = t + s->backoff_ms;
            if (!quiet)
                fprintf(stderr, "moda up: %s (pid %d) %s after %.1f s; restarting in %.1f s (log %s)\n",
                        s->name, (int)pid, describe_exit(status, why, sizeof why),
                        (double)(t - s->started_ms) / 1000.0, (double)s->backoff_ms / 1000.0, s->log);
            died++;
        }
    }
    return died;
}

static void stop_all(up_svc_t *svc, int timeout_ms)
{
    for (int i = UP_NSVC - 1; i >= 0; i--)
        if (svc[i].pid > 0) kill(svc[i].pid, SIGTERM);
    int64_t t0 = now_ms(), deadline = t0 + timeout_ms;
    for (;;) {
        int alive = 0;
        for (int i = 0; i < UP_NSVC; i++) {
            if (svc[i].pid <= 0) continue;
            int status;
            pid_t r = waitpid(svc[i].pid, &status, WNOHANG);
            if (r == svc[i].pid || (r < 0 && errno == ECHILD)) {
                printf("moda up: %-8s stopped in %.2f s\n", svc[i].name, (double)(now_ms() - t0) / 1000.0);
                svc[i].pid = 0;
            } else
                alive++;
        }
        if (!alive) return;
        if (now_ms() >= deadline) break;
        sleep_ms(20);
    }
    for (int i = 0; i < UP_NSVC; i++) {
        if (svc[i].pid <= 0) continue;
        fprintf(stderr, "moda up: %s (pid %d) did not stop within %d ms; SIGKILL\n", svc[i].name,
                (int)svc[i].pid, timeout_ms);
        kill(svc[i].pid, SIGKILL);
        waitpid(svc[i].pid, NULL, 0);
        svc[i].pid = 0;
    }
}

/* Start s and wait until it answers Health. 0; -1 after printing why; -2 when SIGINT/SIGTERM
 * arrived meanwhile. */
static int start_and_wait(void *ctx, up_svc_t *s, int timeout_ms)
{
    if (spawn(s)) {
        fprintf(stderr, "moda up: cannot start %s: %s\n", s->name, strerror(errno));
        return -1;
    }
    int64_t deadline = now_ms() + timeout_ms;
    while (!g_stop) {
        int status;
        pid_t r = waitpid(s->pid, &status, WNOHANG);
        if (r == s->pid) {
            char why[96];
            fprintf(stderr, "moda up: %s failed to start: %s\n", s->name, describe_exit(status, why, sizeof why));
            s->pid = 0;
            print_log_tail(s, 15);
            return -1;
        }
        if (probe_health(ctx, s->ctl, 300) == 0) return 0;
        if (now_ms() >= deadline) {
            fprintf(stderr, "moda up: %s (pid %d) did not answer Health on %s within %d ms\n", s->name,
                    (int)s->pid, s->ctl, timeout_ms);
            print_log_tail(s, 15);
            return -1;
        }
    }
    return -2; /* stopped by a signal while waiting: not a failure */
}

static void free_svcs(up_svc_t *svc)
{
    for (int i = 0; i < UP_NSVC; i++)
        for (int a = 0; a < svc[i].argc; a++) free(svc[i].argv[a]);
}

int cmd_up(int argc, char **argv)
{
    err_t err = {0};
    cfg_t *cfg = cfg_new("moda up", "[--config FILE] [--data DIR] [--camera SOURCE] [--fps N]",
                         "Start moda-registry, moda-label, moda-train, moda-infer and moda-ingest on "
                         "this machine\nas supervised child processes on ipc:// endpoints in "
                         "--run-dir, wait until each answers\nHealth, print a summary, restart a "
                         "child that dies (with backoff), and stop them all\ncleanly on Ctrl-C / "
                         "SIGTERM (exit 0). Logs: <data>/logs/<service>.log. `moda status`\nreads "
                         "<run-dir>/up.json. Exit 1 when a service fails to start, 2 on bad "
                         "arguments.",
                         keys, 0, &err);
    if (!cfg) {
        fprintf(stderr, "moda up: %s\n", err.msg);
        return 2;
    }
    int rc = cfg_parse(cfg, argc, argv, &err);
    if (client_help_version(cfg, rc)) {
        cfg_destroy(&cfg);
        return 0;
    }
    if (rc) {
        fprintf(stderr, "moda up: %s\n", err.msg);
        cfg_destroy(&cfg);
        return 2;
    }

    char run_dir[128], data[UP_PATH], bindir[UP_PATH], state[UP_PATH];
    client_run_dir(cfg, run_dir, sizeof run_dir);
    if (cfg_str(cfg, "data")[0] == '/') {
        snprintf(data, sizeof data, "%s", cfg_str(cfg, "data"));
    } else {
        char cwd[UP_PATH - 100];
        if (!getcwd(cwd, sizeof cwd)) snprintf(cwd, sizeof cwd, ".");
        snprintf(data, sizeof data, "%.*s/%.80s", (int)(UP_PATH - 100), cwd, cfg_str(cfg, "data"));
    }
    if (strlen(data) > UP_PATH - 40) {
        fprintf(stderr, "moda up: --data path too long\n");
        cfg_destroy(&cfg);
        return 2;
    }
    if (paths_exe_dir(bindir, sizeof bindir)) {
        fprintf(stderr, "moda up: cannot find the directory of this executable\n");
        cfg_destroy(&cfg);
        return 1;
    }
    char logs[UP_PATH], regdata[UP_PATH], labdata[UP_PATH];
    snprintf(logs, sizeof logs, "%.450s/logs", data);
    snprintf(regdata, sizeof regdata, "%.450s/registry", data);
    snprintf(labdata, sizeof labdata, "%.450s/label", data);
    snprintf(state, sizeof state, "%s/up.json", run_dir);
    if (mkdir_p(run_dir) || mkdir_p(logs) || mkdir_p(regdata) || mkdir_p(labdata)) {
        fprintf(stderr, "moda up: cannot create %s or %s: %s\n", run_dir, logs, strerror(errno));
        cfg_destroy(&cfg);
        return 1;
    }
    pid_t other = running_up(state);
    if (other) {
        fprintf(stderr, "moda up: already running (pid %d, %s); stop it first or use --run-dir\n", (int)other, state);
        cfg_destroy(&cfg);
        return 1;
    }

    char ep[16][160];
    const char *epn[] = {"registry", "registry-pub", "label", "label-hc", "train", "infer", "infer-frames",
                         "infer-results", "infer-segment", "ingest"};
    for (int i = 0; i < 10; i++) snprintf(ep[i], sizeof ep[i], "ipc://%s/%s.sock", run_dir, epn[i]);
    enum { E_REG, E_REGPUB, E_LAB, E_LABHC, E_TRAIN, E_INF, E_FRAMES, E_RESULTS, E_SEG, E_ING };

    up_svc_t svc[UP_NSVC];
    memset(svc, 0, sizeof svc);
    const char *names[UP_NSVC] = {"registry", "label", "train", "infer", "ingest"};
    const int ctl[UP_NSVC] = {E_REG, E_LAB, E_TRAIN, E_INF, E_ING};
    for (int i = 0; i < UP_NSVC; i++) {
        up_svc_t *s = &svc[i];
        s->name = names[i];
        snprintf(s->bin, sizeof s->bin, "%.400s/moda-%s", bindir, names[i]);
        snprintf(s->ctl, sizeof s->ctl, "%s", ep[ctl[i]]);
        snprintf(s->log, sizeof s->log, "%.450s/%s.log", logs, names[i]);
        s->backoff_ms = 0;
        add_arg(s, s->bin);
        add_opt(s, "--bind", s->ctl);
        add_opt(s, "--log-level", cfg_str(cfg, "log_level"));
    }
    add_opt(&svc[0], "--data", regdata);
    add_opt(&svc[0], "--pub", ep[E_REGPUB]);
    add_extra(&svc[0], cfg_str(cfg, "registry_args"));
    add_opt(&svc[1], "--data", labdata);
    add_opt(&svc[1], "--hard-case-bind", ep[E_LABHC]);
    add_extra(&svc[1], cfg_str(cfg, "label_args"));
    char traindata[UP_PATH];
    snprintf(traindata, sizeof traindata, "%.450s/train", data);
    add_opt(&svc[2], "--label", ep[E_LAB]);
    add_opt(&svc[2], "--registry", ep[E_REG]);
    add_opt(&svc[2], "--state-dir", traindata);
    add_opt(&svc[3], "--frames", ep[E_FRAMES]);
    add_opt(&svc[3], "--results", ep[E_RESULTS]);
    add_opt(&svc[3], "--segment", ep[E_SEG]);
    add_opt(&svc[3], "--registry", ep[E_REG]);
    add_opt(&svc[3], "--registry-pub", ep[E_REGPUB]);
    add_opt(&svc[3], "--label", ep[E_LABHC]);
    char model[UP_PATH];
    if (*cfg_str(cfg, "model"))
        snprintf(model, sizeof model, "%s", cfg_str(cfg, "model"));
    else if (paths_default_model(model, sizeof model))
        model[0] = 0;
    if (*model) add_opt(&svc[3], "--model", model);
    if (*model) add_opt(&svc[2], "--model", model);
    add_extra(&svc[2], cfg_str(cfg, "train_args"));
    add_extra(&svc[3], cfg_str(cfg, "infer_args"));
    char fps[32];
    snprintf(fps, sizeof fps, "%g", cfg_double(cfg, "fps"));
    add_opt(&svc[4], "--connect", ep[E_FRAMES]);
    add_opt(&svc[4], "--camera-id", cfg_str(cfg, "camera_id"));
    add_opt(&svc[4], "--source", cfg_str(cfg, "camera"));
    add_opt(&svc[4], "--fps", fps);
    add_extra(&svc[4], cfg_str(cfg, "ingest_args"));

    for (int i = 0; i < UP_NSVC; i++)
        if (access(svc[i].bin, X_OK)) {
            fprintf(stderr, "moda up: %s: %s (build the services first: ./moda.sh build)\n", svc[i].bin,
                    strerror(errno));
            free_svcs(svc);
            cfg_destroy(&cfg);
            return 1;
        }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    msg_set_sender("moda-up");
    void *ctx = zmq_ctx_new();
    int status = 0;
    int timeout = (int)cfg_int(cfg, "start_timeout_ms");
    int64_t t0 = now_ms();
    for (int i = 0; i < UP_NSVC && !g_stop; i++) {
        int64_t ts = now_ms();
        int r = start_and_wait(ctx, &svc[i], timeout);
        if (r == -2) break;
        if (r) {
            status = 1;
            break;
        }
        printf("moda up: %-8s pid %-7d up in %5.2f s  %s\n", svc[i].name, (int)svc[i].pid,
               (double)(now_ms() - ts) / 1000.0, svc[i].ctl);
        fflush(stdout);
        write_state(state, run_dir, data, svc);
    }
    if (!status && !g_stop) {
        printf("\nmoda up: all %d services up in %.2f s (pid %d)\n"
               "  camera    %s = %s at %s fps\n"
               "  results   %s (SUB result.%s)\n"
               "  data      %s\n"
               "  logs      %s/<service>.log\n"
               "  state     %s\n"
               "  `moda status` for health and counters; Ctrl-C stops everything.\n",
               UP_NSVC, (double)(now_ms() - t0) / 1000.0, (int)getpid(), cfg_str(cfg, "camera_id"),
               cfg_str(cfg, "camera"), fps, ep[E_RESULTS], cfg_str(cfg, "camera_id"), data, logs, state);
        fflush(stdout);
    }
    int64_t bo0 = cfg_int(cfg, "backoff_ms"), bomax = cfg_int(cfg, "backoff_max_ms");
    while (!status && !g_stop) {
        sleep_ms(100);
        if (reap(svc, 0, bo0, bomax)) write_state(state, run_dir, data, svc);
        int64_t t = now_ms();
        for (int i = 0; i < UP_NSVC && !g_stop; i++) {
            up_svc_t *s = &svc[i];
            if (s->pid || !s->restart_at_ms || t < s->restart_at_ms) continue;
            if (spawn(s)) {
                fprintf(stderr, "moda up: cannot restart %s: %s\n", s->name, strerror(errno));
                s->restart_at_ms = t + s->backoff_ms;
                continue;
            }
            s->restarts++;
            fprintf(stderr, "moda up: restarted %s as pid %d (restart %d)\n", s->name, (int)s->pid, s->restarts);
            write_state(state, run_dir, data, svc);
        }
    }
    if (g_stop) printf("moda up: stopping\n");
    fflush(stdout);
    stop_all(svc, (int)cfg_int(cfg, "stop_timeout_ms"));
    reap(svc, 1, 0, 0);
    unlink(state);
    if (!status) printf("moda up: all services stopped\n");
    zmq_ctx_term(ctx);
    free_svcs(svc);
    cfg_destroy(&cfg);
    return status;
}
