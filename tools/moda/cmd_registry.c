/* moda registry — talk to moda-registry: list, show, put, promote, rollback, revert-domain,
 * history, export, backup, and a benchmark (docs/registry.md).
 *
 *   moda registry list [--json] [--limit N]
 *   moda registry show V [--json]                    V: a version number or an alias
 *   moda registry put FILE [--reason R] [--alias A]
 *   moda registry promote V [--alias A] [--reason R]
 *   moda registry rollback [--alias A] [--to V] [--reason R]
 *   moda registry revert-domain NAME --to V [--alias A] [--no-promote]
 *   moda registry history [--alias A] [--limit N] [--json]
 *   moda registry export V FILE
 *   moda registry backup DIR
 *   moda registry bench [--registry-bin PATH]
 * Common: --endpoint ENDPOINT (default: the registry's default bind), --timeout-ms, --actor.
 * Exit 0 ok, 1 failure (the registry's message is printed), 2 bad arguments.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bank.h"
#include "cfg.h"
#include "client.h"
#include "cmds.h"
#include "json.h"
#include "msg.h"

/* The registry's default --bind (services/registry/reg.h REG_DEFAULT_BIND). */
#define DEFAULT_ENDPOINT "ipc:///tmp/moda-registry.sock"
#define PUT_CHUNK ((size_t)32 << 20) /* one frame for most banks: the registry then needs no concatenation copy */

static const cfg_key_t keys[] = {
    {"endpoint", CFG_ENDPOINT, DEFAULT_ENDPOINT, 0, 0, "registry request endpoint"},
    {"timeout_ms", CFG_INT, "30000", 1, 3600000, "give up waiting for a reply after this long"},
    {"json", CFG_BOOL, "false", 0, 0, "machine-readable output (list, show, history)"},
    {"alias", CFG_STRING, "", 0, 64, "alias to act on (promote, rollback, revert-domain: default active; history: all)"},
    {"to", CFG_INT, "0", 0, 9e18, "target version (rollback: default the previous value; revert-domain: required)"},
    {"reason", CFG_STRING, "", 0, 512, "why (kept in the version / history)"},
    {"actor", CFG_STRING, "", 0, 512, "who (default $USER)"},
    {"limit", CFG_INT, "0", 0, 1e6, "list/history: at most this many entries (0: all)"},
    {"no_promote", CFG_BOOL, "false", 0, 0, "revert-domain: create the version without moving the alias"},
    {"no_verify", CFG_BOOL, "false", 0, 0, "put/export: skip the client-side bank digest check"},
    {"registry_bin", CFG_STRING, "", 0, 4000, "bench: moda-registry to start (default: next to this program)"},
    {"versions", CFG_INT, "1000", 10, 100000, "bench: versions to create for the listing benchmark"},
    {"rounds", CFG_INT, "300", 10, 100000, "bench: rollback round trips"},
    {"no_sync", CFG_BOOL, "false", 0, 0, "bench: run the registries without fsync (shows the cost without the disk)"},
    CFG_END,
};

typedef struct cli {
    cfg_t *cfg;
    client_t cl;
    int timeout;
    char actor[128];
} cli_t;

/* ---- plumbing ------------------------------------------------------------------------------ */

static int cli_connect(cli_t *c, const char *endpoint, err_t *err)
{
    msg_set_sender("moda-cli");
    int rc = client_open(&c->cl, NULL, endpoint, "registry", c->timeout, err);
    c->cl.lim.max_total_bytes = (size_t)1 << 36;
    c->cl.lim.max_envelope_bytes = (size_t)1 << 28; /* a list of many versions is one big protobuf */
    return rc;
}

static void fmt_time(int64_t us, char *buf, size_t n)
{
    time_t t = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void fmt_size(uint64_t b, char *buf, size_t n)
{
    if (b >= 1000000) snprintf(buf, n, "%.1f MB", (double)b / 1e6);
    else if (b >= 1000) snprintf(buf, n, "%.1f kB", (double)b / 1e3);
    else snprintf(buf, n, "%llu B", (unsigned long long)b);
}

static int is_number(const char *s)
{
    if (!s || !*s) return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9') return 0;
    return 1;
}

/* ---- output ---------------------------------------------------------------------------------- */

static void json_version(json_writer_t *w, const Moda__VersionInfo *v)
{
    char t[40];
    fmt_time(v->created_us, t, sizeof t);
    json_w_begin_obj(w);
    json_w_key(w, "version");
    json_w_int(w, (int64_t)v->version);
    json_w_key(w, "parent");
    json_w_int(w, (int64_t)v->parent);
    json_w_key(w, "domains");
    json_w_begin_arr(w);
    for (size_t i = 0; i < v->n_domains; i++) {
        json_w_begin_obj(w);
        json_w_key(w, "name");
        json_w_string(w, v->domains[i]->name);
        json_w_key(w, "hash");
        json_w_string(w, v->domains[i]->content_hash);
        json_w_key(w, "size");
        json_w_int(w, (int64_t)v->domains[i]->size);
        json_w_end_obj(w);
    }
    json_w_end_arr(w);
    json_w_key(w, "aliases");
    json_w_begin_arr(w);
    for (size_t i = 0; i < v->n_aliases; i++) json_w_string(w, v->aliases[i]);
    json_w_end_arr(w);
    json_w_key(w, "created");
    json_w_string(w, t);
    json_w_key(w, "created_us");
    json_w_int(w, v->created_us);
    json_w_key(w, "actor");
    json_w_string(w, v->actor);
    json_w_key(w, "reason");
    json_w_string(w, v->reason);
    json_w_key(w, "base_hash");
    json_w_string(w, v->base_hash);
    json_w_key(w, "selector_hash");
    json_w_string(w, v->selector_hash);
    json_w_key(w, "bank_digest");
    json_w_string(w, v->bank_digest);
    json_w_key(w, "bank_size");
    json_w_int(w, (int64_t)v->bank_size);
    json_w_key(w, "metrics");
    json_w_begin_obj(w);
    for (size_t i = 0; i < v->n_metrics; i++) {
        json_w_key(w, v->metrics[i]->name);
        json_w_double(w, v->metrics[i]->value);
    }
    json_w_end_obj(w);
    json_w_end_obj(w);
}

static int json_print(json_writer_t *w, err_t *err)
{
    size_t n;
    char *s = json_w_finish(w, &n, err);
    if (!s) return err->code;
    printf("%s\n", s);
    free(s);
    return 0;
}

static void aliases_str(const Moda__VersionInfo *v, char *buf, size_t n)
{
    buf[0] = 0;
    size_t o = 0;
    for (size_t i = 0; i < v->n_aliases && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s%s", i ? "," : "", v->aliases[i]);
    if (!v->n_aliases) snprintf(buf, n, "-");
}

static void print_version_text(const Moda__VersionInfo *v)
{
    char t[40], al[256], sz[32];
    fmt_time(v->created_us, t, sizeof t);
    aliases_str(v, al, sizeof al);
    fmt_size(v->bank_size, sz, sizeof sz);
    printf("version     %llu\nparent      %llu\ncreated     %s\nactor       %s\nreason      %s\naliases     %s\n"
           "base model  %s\nbank        %s, digest %s\nselector    %s\n",
           (unsigned long long)v->version, (unsigned long long)v->parent, t, *v->actor ? v->actor : "-",
           *v->reason ? v->reason : "-", al, v->base_hash, sz, v->bank_digest, v->selector_hash);
    for (size_t i = 0; i < v->n_metrics; i++) printf("metric      %s = %g\n", v->metrics[i]->name, v->metrics[i]->value);
    printf("domains     %zu\n", v->n_domains);
    for (size_t i = 0; i < v->n_domains; i++) {
        fmt_size(v->domains[i]->size, sz, sizeof sz);
        printf("  %-24s %.16s  %s\n", v->domains[i]->name, v->domains[i]->content_hash, sz);
    }
}

/* ---- subcommands ----------------------------------------------------------------------------- */

static int do_list(cli_t *c, err_t *err)
{
    Moda__ListVersionsRequest q = MODA__LIST_VERSIONS_REQUEST__INIT;
    q.limit = (uint32_t)cfg_int(c->cfg, "limit");
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_LIST_VERSIONS_REQUEST;
    env.list_versions_request = &q;
    msg_t *rep = NULL;
    int rc = client_call(&c->cl, &env, NULL, 0, MODA__ENVELOPE__BODY_LIST_VERSIONS_REPLY, &rep, err);
    if (!rc) {
        const Moda__ListVersionsReply *l = rep->env->list_versions_reply;
        if (cfg_bool(c->cfg, "json")) {
            json_writer_t w;
            json_w_init(&w);
            json_w_begin_arr(&w);
            for (size_t i = 0; i < l->n_versions; i++) json_version(&w, l->versions[i]);
            json_w_end_arr(&w);
            rc = json_print(&w, err);
        } else {
            printf("%7s %7s  %-20s %7s %10s  %-16s %s\n", "VERSION", "PARENT", "CREATED", "DOMAINS", "SIZE", "ALIASES",
                   "REASON");
            for (size_t i = 0; i < l->n_versions; i++) {
                const Moda__VersionInfo *v = l->versions[i];
                char t[40], al[256], sz[32];
                fmt_time(v->created_us, t, sizeof t);
                aliases_str(v, al, sizeof al);
                fmt_size(v->bank_size, sz, sizeof sz);
                printf("%7llu %7llu  %-20s %7zu %10s  %-16s %s\n", (unsigned long long)v->version,
                       (unsigned long long)v->parent, t, v->n_domains, sz, al, v->reason);
            }
            if (!l->n_versions) printf("(no versions)\n");
        }
    }
    msg_free(&rep);
    return rc;
}

/* GetVersion of a version number or alias; whole: stream the bank. */
static int get_version(cli_t *c, const char *spec, int whole, msg_t **rep, err_t *err)
{
    Moda__GetVersionRequest q = MODA__GET_VERSION_REQUEST__INIT;
    if (is_number(spec)) q.version = strtoull(spec, NULL, 10);
    else q.alias = (char *)spec;
    if (!q.version && !*q.alias) return err_set(err, ERR_INVALID, "version 0 does not exist");
    q.whole_bank = whole;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_GET_VERSION_REQUEST;
    env.get_version_request = &q;
    return client_call(&c->cl, &env, NULL, 0, MODA__ENVELOPE__BODY_GET_VERSION_REPLY, rep, err);
}

static int do_show(cli_t *c, const char *spec, err_t *err)
{
    msg_t *rep = NULL;
    int rc = get_version(c, spec, 0, &rep, err);
    if (!rc) {
        const Moda__VersionInfo *v = rep->env->get_version_reply->info;
        if (!v) rc = err_set(err, ERR_FORMAT, "reply without version info");
        else if (cfg_bool(c->cfg, "json")) {
            json_writer_t w;
            json_w_init(&w);
            json_version(&w, v);
            rc = json_print(&w, err);
        } else {
            print_version_text(v);
        }
    }
    msg_free(&rep);
    return rc;
}

/* Sends a bank file; *out_version gets the new version. Quiet when print == 0. */
static int put_bank(cli_t *c, const unsigned char *data, size_t len, const char *reason, const char *alias, int verify,
                    uint64_t *out_version, int print, err_t *err)
{
    Moda__PutVersionRequest q = MODA__PUT_VERSION_REQUEST__INIT;
    q.whole_bank = 1;
    q.actor = c->actor;
    q.reason = (char *)reason;
    q.set_alias = (char *)(alias ? alias : "");
    char digest[65] = "";
    if (verify) {
        bank_split_t s;
        int rc = bank_split(data, len, &s, err);
        if (!rc) snprintf(digest, sizeof digest, "%s", s.digest);
        bank_split_clear(&s);
        if (rc) return err_wrap(err, "bank refused before sending");
        q.bank_digest = digest;
    }
    int np = (int)((len + PUT_CHUNK - 1) / PUT_CHUNK);
    if (np > MSG_MAX_PARTS) return err_set(err, ERR_RANGE, "bank of %zu bytes is too large to send", len);
    msg_part_t parts[MSG_MAX_PARTS];
    for (int i = 0; i < np; i++) {
        parts[i].data = data + (size_t)i * PUT_CHUNK;
        parts[i].size = len - (size_t)i * PUT_CHUNK < PUT_CHUNK ? len - (size_t)i * PUT_CHUNK : PUT_CHUNK;
    }
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_PUT_VERSION_REQUEST;
    env.put_version_request = &q;
    msg_t *rep = NULL;
    int rc = client_call(&c->cl, &env, parts, np, MODA__ENVELOPE__BODY_PUT_VERSION_REPLY, &rep, err);
    if (!rc) {
        const Moda__VersionInfo *v = rep->env->put_version_reply->info;
        if (!v) rc = err_set(err, ERR_FORMAT, "reply without version info");
        else {
            *out_version = v->version;
            if (print) {
                char sz[32];
                fmt_size(v->bank_size, sz, sizeof sz);
                printf("version %llu (parent %llu): %zu domains, %s, digest %.16s%s%s\n", (unsigned long long)v->version,
                       (unsigned long long)v->parent, v->n_domains, sz, v->bank_digest, alias && *alias ? ", alias " : "",
                       alias && *alias ? alias : "");
            }
        }
    }
    msg_free(&rep);
    return rc;
}

static int do_put(cli_t *c, const char *path, err_t *err)
{
    unsigned char *data = NULL;
    size_t len = 0;
    int rc = client_read_file(path, &data, &len, err);
    if (rc) return rc;
    uint64_t v;
    rc = put_bank(c, data, len, cfg_str(c->cfg, "reason"), cfg_str(c->cfg, "alias"), !cfg_bool(c->cfg, "no_verify"), &v,
                  1, err);
    free(data);
    return rc;
}

static void print_entry(const Moda__HistoryEntry *e)
{
    printf("%s: %llu -> %llu (%s)\n", e->alias, (unsigned long long)e->from, (unsigned long long)e->to, e->action);
}

static const char *alias_or_active(cli_t *c)
{
    const char *a = cfg_str(c->cfg, "alias");
    return *a ? a : "active";
}

static int do_promote(cli_t *c, const char *spec, err_t *err)
{
    if (!is_number(spec)) return err_set(err, ERR_INVALID, "promote: '%s' is not a version number", spec);
    Moda__SetAliasRequest q = MODA__SET_ALIAS_REQUEST__INIT;
    q.alias = (char *)alias_or_active(c);
    q.version = strtoull(spec, NULL, 10);
    q.actor = c->actor;
    q.reason = (char *)cfg_str(c->cfg, "reason");
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_SET_ALIAS_REQUEST;
    env.set_alias_request = &q;
    msg_t *rep = NULL;
    int rc = client_call(&c->cl, &env, NULL, 0, MODA__ENVELOPE__BODY_SET_ALIAS_REPLY, &rep, err);
    if (!rc && rep->env->set_alias_reply->entry) print_entry(rep->env->set_alias_reply->entry);
    msg_free(&rep);
    return rc;
}

static int rollback(cli_t *c, const char *alias, uint64_t to, const char *reason, int print, err_t *err)
{
    Moda__RollbackRequest q = MODA__ROLLBACK_REQUEST__INIT;
    q.alias = (char *)alias;
    q.to_version = to;
    q.actor = c->actor;
    q.reason = (char *)reason;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_ROLLBACK_REQUEST;
    env.rollback_request = &q;
    msg_t *rep = NULL;
    int rc = client_call(&c->cl, &env, NULL, 0, MODA__ENVELOPE__BODY_ROLLBACK_REPLY, &rep, err);
    if (!rc && print && rep->env->rollback_reply->entry) print_entry(rep->env->rollback_reply->entry);
    msg_free(&rep);
    return rc;
}

static int do_revert_domain(cli_t *c, const char *name, err_t *err)
{
    uint64_t to = (uint64_t)cfg_int(c->cfg, "to");
    if (!to) return err_set(err, ERR_CONFIG, "revert-domain needs --to VERSION");
    Moda__RevertDomainRequest q = MODA__REVERT_DOMAIN_REQUEST__INIT;
    q.alias = (char *)alias_or_active(c);
    q.domain = (char *)name;
    q.to_version = to;
    q.actor = c->actor;
    q.reason = (char *)cfg_str(c->cfg, "reason");
    q.set_alias = cfg_bool(c->cfg, "no_promote") ? "" : q.alias;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_REVERT_DOMAIN_REQUEST;
    env.revert_domain_request = &q;
    msg_t *rep = NULL;
    int rc = client_call(&c->cl, &env, NULL, 0, MODA__ENVELOPE__BODY_REVERT_DOMAIN_REPLY, &rep, err);
    if (!rc && rep->env->revert_domain_reply->info) {
        const Moda__VersionInfo *v = rep->env->revert_domain_reply->info;
        printf("version %llu (parent %llu): domain %s taken from version %llu%s%s\n", (unsigned long long)v->version,
               (unsigned long long)v->parent, name, (unsigned long long)to, *q.set_alias ? ", alias " : "",
               q.set_alias);
    }
    msg_free(&rep);
    return rc;
}

static int do_history(cli_t *c, err_t *err)
{
    Moda__HistoryRequest q = MODA__HISTORY_REQUEST__INIT;
    q.alias = (char *)cfg_str(c->cfg, "alias");
    q.limit = (uint32_t)cfg_int(c->cfg, "limit");
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_HISTORY_REQUEST;
    env.history_request = &q;
    msg_t *rep = NULL;
    int rc = client_call(&c->cl, &env, NULL, 0, MODA__ENVELOPE__BODY_HISTORY_REPLY, &rep, err);
    if (!rc) {
        const Moda__HistoryReply *h = rep->env->history_reply;
        if (cfg_bool(c->cfg, "json")) {
            json_writer_t w;
            json_w_init(&w);
            json_w_begin_arr(&w);
            for (size_t i = 0; i < h->n_entries; i++) {
                const Moda__HistoryEntry *e = h->entries[i];
                char t[40];
                fmt_time(e->time_us, t, sizeof t);
                json_w_begin_obj(&w);
                json_w_key(&w, "seq");
                json_w_int(&w, (int64_t)e->seq);
                json_w_key(&w, "alias");
                json_w_string(&w, e->alias);
                json_w_key(&w, "from");
                json_w_int(&w, (int64_t)e->from);
                json_w_key(&w, "to");
                json_w_int(&w, (int64_t)e->to);
                json_w_key(&w, "action");
                json_w_string(&w, e->action);
                json_w_key(&w, "actor");
                json_w_string(&w, e->actor);
                json_w_key(&w, "reason");
                json_w_string(&w, e->reason);
                json_w_key(&w, "time");
                json_w_string(&w, t);
                json_w_key(&w, "time_us");
                json_w_int(&w, e->time_us);
                json_w_end_obj(&w);
            }
            json_w_end_arr(&w);
            rc = json_print(&w, err);
        } else {
            printf("%5s  %-20s %-12s %7s %7s  %-13s %-12s %s\n", "SEQ", "TIME", "ALIAS", "FROM", "TO", "ACTION", "ACTOR",
                   "REASON");
            for (size_t i = 0; i < h->n_entries; i++) {
                const Moda__HistoryEntry *e = h->entries[i];
                char t[40];
                fmt_time(e->time_us, t, sizeof t);
                printf("%5llu  %-20s %-12s %7llu %7llu  %-13s %-12s %s\n", (unsigned long long)e->seq, t, e->alias,
                       (unsigned long long)e->from, (unsigned long long)e->to, e->action, *e->actor ? e->actor : "-",
                       e->reason);
            }
            if (!h->n_entries) printf("(no alias changes)\n");
        }
    }
    msg_free(&rep);
    return rc;
}

/* Fetches a whole bank: *out caller owns (free). */
static int fetch_bank(cli_t *c, const char *spec, int verify, unsigned char **out, size_t *len, uint64_t *ver,
                      err_t *err)
{
    msg_t *rep = NULL;
    int rc = get_version(c, spec, 1, &rep, err);
    if (!rc) {
        const Moda__GetVersionReply *g = rep->env->get_version_reply;
        size_t total = 0;
        for (int i = 0; i < rep->nparts; i++) total += rep->parts[i].size;
        if (!g->info || total != g->bank_size || total != g->info->bank_size)
            rc = err_set(err, ERR_FORMAT, "received %zu bytes, the registry announced %llu", total,
                         (unsigned long long)g->bank_size);
        unsigned char *b = rc ? NULL : malloc(total ? total : 1);
        if (!rc && !b) rc = err_set(err, ERR_NOMEM, "out of memory for %zu bytes", total);
        size_t o = 0;
        for (int i = 0; !rc && i < rep->nparts; i++) {
            memcpy(b + o, rep->parts[i].data, rep->parts[i].size);
            o += rep->parts[i].size;
        }
        if (!rc && verify) {
            bank_split_t s;
            rc = bank_split(b, total, &s, err);
            if (!rc && strcmp(s.digest, g->info->bank_digest))
                rc = err_set(err, ERR_FORMAT, "received bank's digest differs from the version's");
            bank_split_clear(&s);
        }
        if (rc) free(b);
        else {
            *out = b;
            *len = total;
            *ver = g->info->version;
        }
    }
    msg_free(&rep);
    return rc;
}

static int do_export(cli_t *c, const char *spec, const char *path, err_t *err)
{
    unsigned char *b;
    size_t n;
    uint64_t v;
    int rc = fetch_bank(c, spec, !cfg_bool(c->cfg, "no_verify"), &b, &n, &v, err);
    if (rc) return rc;
    rc = client_write_file_atomic(path, b, n, err);
    if (!rc) printf("version %llu -> %s (%zu bytes)\n", (unsigned long long)v, path, n);
    free(b);
    return rc;
}

static int do_backup(cli_t *c, const char *dir, err_t *err)
{
    char abs[PATH_MAX];
    if (dir[0] == '/') snprintf(abs, sizeof abs, "%s", dir);
    else {
        char cwd[PATH_MAX];
        if (!getcwd(cwd, sizeof cwd)) return err_errno(err, ERR_IO, errno, "getcwd");
        snprintf(abs, sizeof abs, "%s/%s", cwd, dir);
    }
    Moda__BackupRequest q = MODA__BACKUP_REQUEST__INIT;
    q.dir = abs;
    Moda__Envelope env = MODA__ENVELOPE__INIT;
    env.body_case = MODA__ENVELOPE__BODY_BACKUP_REQUEST;
    env.backup_request = &q;
    msg_t *rep = NULL;
    int rc = client_call(&c->cl, &env, NULL, 0, MODA__ENVELOPE__BODY_BACKUP_REPLY, &rep, err);
    if (!rc)
        printf("backup %s: %llu bytes in %.3f s\n", abs, (unsigned long long)rep->env->backup_reply->bytes,
               rep->env->backup_reply->seconds);
    msg_free(&rep);
    return rc;
}

/* ---- bench ------------------------------------------------------------------------------------ */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int dcmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, int n, double p)
{
    qsort(v, (size_t)n, sizeof *v, dcmp);
    int i = (int)(p * (n - 1) + 0.5);
    return v[i < 0 ? 0 : i >= n ? n - 1 : i];
}

typedef struct child {
    pid_t pid;
    char dir[PATH_MAX];
    char ep[64];
} child_t;

static int start_registry(const char *bin, const char *root, const char *name, int port, int no_sync, child_t *ch,
                          err_t *err)
{
    snprintf(ch->dir, sizeof ch->dir, "%s/%s", root, name);
    snprintf(ch->ep, sizeof ch->ep, "tcp://127.0.0.1:%d", port);
    char pub[64];
    snprintf(pub, sizeof pub, "tcp://127.0.0.1:%d", port + 1);
    ch->pid = fork();
    if (ch->pid < 0) return err_errno(err, ERR_IO, errno, "fork");
    if (ch->pid == 0) {
        execl(bin, bin, "--data", ch->dir, "--bind", ch->ep, "--pub", pub, "--log-level", "warn",
              no_sync ? "--no-sync=true" : "--no-sync=false", (char *)NULL);
        _exit(127);
    }
    return 0;
}

static void stop_registry(child_t *ch)
{
    if (ch->pid > 0) {
        kill(ch->pid, SIGTERM);
        waitpid(ch->pid, NULL, 0);
        ch->pid = 0;
    }
}

/* Waits until the registry answers (ListVersions with limit 1). */
static int wait_ready(cli_t *c, err_t *err)
{
    for (int i = 0; i < 100; i++) {
        Moda__ListVersionsRequest q = MODA__LIST_VERSIONS_REQUEST__INIT;
        q.limit = 1;
        Moda__Envelope env = MODA__ENVELOPE__INIT;
        env.body_case = MODA__ENVELOPE__BODY_LIST_VERSIONS_REQUEST;
        env.list_versions_request = &q;
        msg_t *rep = NULL;
        c->cl.timeout_ms = 200;
        int rc = client_call(&c->cl, &env, NULL, 0, MODA__ENVELOPE__BODY_LIST_VERSIONS_REPLY, &rep, err);
        c->cl.timeout_ms = c->timeout;
        msg_free(&rep);
        if (!rc) return 0;
        /* a REQ socket that timed out cannot send again: start over */
        const char *ep = c->cl.endpoint;
        client_close(&c->cl);
        if ((rc = cli_connect(c, ep, err))) return rc;
    }
    return err_set(err, ERR_TIMEOUT, "registry at %s did not answer", c->cl.endpoint);
}

static const char *BENCH_BASE = "be4c4be4c4be4c4be4c4be4c4be4c4be4c4be4c4be4c4be4c4be4c4be4c4be4c";

static int do_bench(cli_t *c, const char *self, err_t *err)
{
    char bin[PATH_MAX];
    const char *rb = cfg_str(c->cfg, "registry_bin");
    if (*rb) snprintf(bin, sizeof bin, "%s", rb);
    else {
        char exe[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        if (n <= 0) snprintf(exe, sizeof exe, "%s", self);
        else exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) *slash = 0;
        snprintf(bin, sizeof bin, "%s/moda-registry", slash ? exe : ".");
    }
    if (access(bin, X_OK)) return err_set(err, ERR_CONFIG, "bench: %s is not executable (use --registry-bin)", bin);
    /* as moda-registry does: reuse big buffers instead of faulting in fresh pages per bank */
    mallopt(M_MMAP_THRESHOLD, 256 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
    char root[] = "/tmp/moda-regbench-XXXXXX";
    if (!mkdtemp(root)) return err_errno(err, ERR_IO, errno, "mkdtemp");
    int port = 20000 + (int)(getpid() % 20000);
    int nversions = (int)cfg_int(c->cfg, "versions"), rounds = (int)cfg_int(c->cfg, "rounds");
    child_t ch = {0};
    int rc = 0;
    double *t = calloc((size_t)(rounds > 64 ? rounds : 64) + 1, sizeof *t);
    printf("moda registry bench: %s, tcp loopback, %s, data in %s\n", bin,
           cfg_bool(c->cfg, "no_sync") ? "NO sync (--no-sync)" : "full sync (fsync on every commit)", root);

    /* 1) put of a 10 MB bank: four domains of 2.5 MB, every domain new in every put */
    int nosync = cfg_bool(c->cfg, "no_sync");
    rc = start_registry(bin, root, "big", port, nosync, &ch, err);
    if (!rc) rc = cli_connect(c, ch.ep, err);
    if (!rc) rc = wait_ready(c, err);
    int nput = 16;
    double digest_ms = 0;
    for (int i = 0; !rc && i < nput; i++) {
        uint32_t gen[4] = {(uint32_t)i * 4 + 1, (uint32_t)i * 4 + 2, (uint32_t)i * 4 + 3, (uint32_t)i * 4 + 4};
        void *b;
        size_t n;
        if ((rc = bank_synth(4, 2500000, 42, gen, BENCH_BASE, &b, &n, err))) break;
        double t0 = now_ms();
        bank_split_t s;
        rc = bank_split(b, n, &s, err);
        bank_split_clear(&s);
        digest_ms += now_ms() - t0;
        uint64_t v;
        double t1 = now_ms();
        if (!rc) rc = put_bank(c, b, n, "bench", "active", 0, &v, 0, err);
        t[i] = now_ms() - t1;
        if (i == 0) printf("  bank size %.2f MB\n", (double)n / 1e6);
        free(b);
    }
    if (!rc) {
        double p50 = pct(t, nput, 0.5), mx = pct(t, nput, 1.0), mn = pct(t, nput, 0.0);
        printf("  put 10 MB bank:        p50 %.1f ms, min %.1f, max %.1f ms over %d puts (target <= 150 ms)%s\n", p50, mn,
               mx, nput, p50 <= 150 ? "" : "  ** over target **");
        printf("  client bank digest:    %.1f ms per bank (moda registry put does this before sending)\n",
               digest_ms / nput);
    }
    /* 2) rollback round trip: alternate the alias between two versions */
    for (int i = 0; !rc && i < rounds; i++) {
        double t0 = now_ms();
        rc = rollback(c, "active", (uint64_t)(i % 2 ? 1 : 2), "bench", 0, err);
        t[i] = now_ms() - t0;
    }
    if (!rc) {
        double p50 = pct(t, rounds, 0.5), p99 = pct(t, rounds, 0.99), mn = pct(t, rounds, 0.0);
        printf("  rollback round trip:   p50 %.2f ms, p99 %.2f ms, min %.2f ms over %d (target p99 <= 5 ms)%s\n", p50, p99,
               mn, rounds, p99 <= 5 ? "" : "  ** over target **");
    }
    client_close(&c->cl);
    stop_registry(&ch);

    /* 3) list 1,000 versions */
    if (!rc) rc = start_registry(bin, root, "many", port + 2, nosync, &ch, err);
    if (!rc) rc = cli_connect(c, ch.ep, err);
    if (!rc) rc = wait_ready(c, err);
    double tput = now_ms();
    for (int i = 0; !rc && i < nversions; i++) {
        uint32_t gen[2] = {(uint32_t)i, 7};
        void *b;
        size_t n;
        uint64_t v;
        if ((rc = bank_synth(2, 1024, 9, gen, BENCH_BASE, &b, &n, err))) break;
        rc = put_bank(c, b, n, "bench", NULL, 0, &v, 0, err);
        free(b);
    }
    tput = now_ms() - tput;
    for (int i = 0; !rc && i < 20; i++) {
        Moda__ListVersionsRequest q = MODA__LIST_VERSIONS_REQUEST__INIT;
        Moda__Envelope env = MODA__ENVELOPE__INIT;
        env.body_case = MODA__ENVELOPE__BODY_LIST_VERSIONS_REQUEST;
        env.list_versions_request = &q;
        msg_t *rep = NULL;
        double t0 = now_ms();
        rc = client_call(&c->cl, &env, NULL, 0, MODA__ENVELOPE__BODY_LIST_VERSIONS_REPLY, &rep, err);
        t[i] = now_ms() - t0;
        if (!rc && rep->env->list_versions_reply->n_versions != (size_t)nversions)
            rc = err_set(err, ERR_STATE, "listed %zu versions, expected %d", rep->env->list_versions_reply->n_versions,
                         nversions);
        msg_free(&rep);
    }
    if (!rc) {
        double p50 = pct(t, 20, 0.5), mx = pct(t, 20, 1.0), mn = pct(t, 20, 0.0);
        printf("  list %d versions:    p50 %.1f ms, min %.1f, max %.1f ms over 20 (target <= 50 ms)%s\n", nversions, p50,
               mn, mx, p50 <= 50 ? "" : "  ** over target **");
        printf("  small puts:            %.2f ms each (%d puts of a 2-domain bank)\n", tput / nversions, nversions);
    }
    client_close(&c->cl);
    stop_registry(&ch);
    free(t);
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0) fprintf(stderr, "moda registry bench: could not remove %s\n", root);
    return rc;
}

/* ---- entry ------------------------------------------------------------------------------------- */

static const char usage_line[] = "COMMAND [ARGS] [options]";
static const char summary[] =
    "Versioned adapter banks in moda-registry. Commands:\n"
    "  list                         versions, newest first (--json: array of objects)\n"
    "  show V                       one version (V: number or alias)\n"
    "  put FILE [--reason R] [--alias A]   store a bank file as a new version\n"
    "  promote V [--alias A]        point an alias (default active) at version V\n"
    "  rollback [--alias A] [--to V] [--reason R]   move the alias back (default: previous value)\n"
    "  revert-domain NAME --to V [--alias A] [--no-promote]\n"
    "                               new version = alias's version with domain NAME from V\n"
    "  history [--alias A]          alias changes, newest first (--json: array)\n"
    "  export V FILE                write version V's bank file (bit-exact canonical form)\n"
    "  backup DIR                   consistent copy of the registry's LMDB (on its host)\n"
    "  bench                        latency of put / rollback / list against a private registry";

int cmd_registry(int argc, char **argv)
{
    err_t err = {0};
    cli_t c = {0};
    c.cfg = cfg_new("moda registry", usage_line, summary, keys, 3, &err);
    if (!c.cfg) {
        fprintf(stderr, "moda registry: %s\n", err.msg);
        return 2;
    }
    int rc = cfg_parse(c.cfg, argc, argv, &err);
    if (client_help_version(c.cfg, rc)) {
        cfg_destroy(&c.cfg);
        return 0;
    }
    int np = rc ? 0 : cfg_npositional(c.cfg);
    const char *sub = np ? cfg_positional(c.cfg, 0) : NULL;
    const char *a1 = np > 1 ? cfg_positional(c.cfg, 1) : NULL, *a2 = np > 2 ? cfg_positional(c.cfg, 2) : NULL;
    static const struct {
        const char *name;
        int nargs;
    } subs[] = {{"list", 0},    {"show", 1},    {"put", 1},    {"promote", 1}, {"rollback", 0}, {"revert-domain", 1},
                {"history", 0}, {"export", 2},  {"backup", 1}, {"bench", 0}};
    int known = -1;
    for (size_t i = 0; !rc && sub && i < sizeof subs / sizeof subs[0]; i++)
        if (!strcmp(sub, subs[i].name)) known = (int)i;
    if (!rc && !sub) rc = err_set(&err, ERR_CONFIG, "missing COMMAND (see --help)");
    else if (!rc && known < 0) rc = err_set(&err, ERR_CONFIG, "unknown command '%s' (see --help)", sub);
    else if (!rc && np - 1 != subs[known].nargs)
        rc = err_set(&err, ERR_CONFIG, "%s takes %d argument%s (see --help)", sub, subs[known].nargs,
                     subs[known].nargs == 1 ? "" : "s");
    const char *alias = rc ? "" : cfg_str(c.cfg, "alias");
    if (!rc && *alias) {
        for (const char *p = alias; *p; p++)
            if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '-'))
                rc = err_set(&err, ERR_CONFIG, "--alias '%s': use [a-z0-9_-]", alias);
    }
    if (rc) {
        fprintf(stderr, "moda registry: %s\n", err.msg);
        cfg_destroy(&c.cfg);
        return 2;
    }
    const char *actor = cfg_str(c.cfg, "actor");
    if (!*actor) actor = getenv("USER") ? getenv("USER") : "unknown";
    snprintf(c.actor, sizeof c.actor, "%s", actor);
    c.timeout = (int)cfg_int(c.cfg, "timeout_ms");
    if (!strcmp(sub, "bench")) rc = do_bench(&c, argv[0], &err);
    else {
        rc = cli_connect(&c, cfg_str(c.cfg, "endpoint"), &err);
        if (!rc) {
            if (!strcmp(sub, "list")) rc = do_list(&c, &err);
            else if (!strcmp(sub, "show")) rc = do_show(&c, a1, &err);
            else if (!strcmp(sub, "put")) rc = do_put(&c, a1, &err);
            else if (!strcmp(sub, "promote")) rc = do_promote(&c, a1, &err);
            else if (!strcmp(sub, "rollback")) {
                rc = rollback(&c, alias_or_active(&c), (uint64_t)cfg_int(c.cfg, "to"), cfg_str(c.cfg, "reason"), 1, &err);
            } else if (!strcmp(sub, "revert-domain")) rc = do_revert_domain(&c, a1, &err);
            else if (!strcmp(sub, "history")) rc = do_history(&c, &err);
            else if (!strcmp(sub, "export")) rc = do_export(&c, a1, a2, &err);
            else if (!strcmp(sub, "backup")) rc = do_backup(&c, a1, &err);
        }
    }
    client_close(&c.cl);
    cfg_destroy(&c.cfg);
    if (rc) {
        fprintf(stderr, "moda registry %s: %s\n", sub, err.msg);
        return rc == ERR_CONFIG ? 2 : 1;
    }
    return 0;
}
