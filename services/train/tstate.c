/* tstate.c — moda-train's job state file (tstate.h). */
#include "tstate.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "json.h"

static const char *phase_name(int p)
{
    return p == TSTATE_RUNNING ? "running" : p == TSTATE_PUTTING ? "putting" : "idle";
}

static int u64_of(const json_t *j, const char *key, uint64_t *out, err_t *err)
{
    int64_t v = 0;
    const json_t *x = json_get(j, key);
    if (!x) return 0;
    int rc = json_get_int64(x, &v, key, err);
    if (!rc && v < 0) rc = err_set(err, ERR_FORMAT, "%s: negative", key);
    if (!rc) *out = (uint64_t)v;
    return rc;
}

static void str_of(const json_t *j, const char *key, char *out, size_t n)
{
    const char *s = json_str(json_get(j, key));
    snprintf(out, n, "%s", s ? s : "");
}

int tstate_load(tstate_t *s, const char *path, err_t *err)
{
    memset(s, 0, sizeof *s);
    FILE *f = fopen(path, "rb");
    if (!f) return errno == ENOENT ? 0 : err_errno(err, ERR_IO, errno, "opening %s", path);
    char *buf = malloc(1 << 20);
    size_t len = buf ? fread(buf, 1, 1 << 20, f) : 0;
    int rd_err = ferror(f);
    fclose(f);
    if (!buf) return err_set(err, ERR_NOMEM, "out of memory reading %s", path);
    if (rd_err) {
        free(buf);
        return err_set(err, ERR_IO, "reading %s", path);
    }
    json_t *j = json_parse(buf, len, err);
    free(buf);
    if (!j) return err_wrap(err, "state file %s", path);
    int rc = 0;
    const json_t *doms = json_get(j, "domains");
    for (size_t i = 0; i < json_len(doms) && !rc; i++) {
        const json_t *o = json_at(doms, i);
        const char *name = json_str(json_get(o, "name"));
        tstate_domain_t *d = name ? tstate_domain(s, name, 1) : NULL;
        if (!d) {
            rc = err_set(err, ERR_FORMAT, "domain entry %zu: bad or missing name", i);
            break;
        }
        rc = u64_of(o, "cursor", &d->cursor, err);
        if (!rc) rc = u64_of(o, "tried", &d->tried, err);
        if (!rc) rc = u64_of(o, "version", &d->version, err);
        str_of(o, "result", d->result, sizeof d->result);
    }
    const json_t *jb = json_get(j, "job");
    if (!rc && jb) {
        const char *ph = json_str(json_get(jb, "phase"));
        s->job.phase = ph && !strcmp(ph, "running")   ? TSTATE_RUNNING
                       : ph && !strcmp(ph, "putting") ? TSTATE_PUTTING
                                                      : TSTATE_IDLE;
        str_of(jb, "id", s->job.id, sizeof s->job.id);
        str_of(jb, "domain", s->job.domain, sizeof s->job.domain);
        rc = u64_of(jb, "cursor", &s->job.cursor, err);
        uint64_t v = 0;
        if (!rc) rc = u64_of(jb, "started_us", &v, err);
        s->job.started_us = (int64_t)v;
        if (!rc) rc = u64_of(jb, "restarts", &v, err);
        s->job.restarts = (int)v;
        if (!rc && s->job.phase != TSTATE_IDLE && (!s->job.id[0] || !s->job.domain[0]))
            rc = err_set(err, ERR_FORMAT, "job without id or domain");
    }
    json_free(&j);
    if (rc) {
        err_wrap(err, "state file %s", path);
        return ERR_FORMAT;
    }
    return 0;
}

int tstate_save(const tstate_t *s, const char *path, err_t *err)
{
    json_writer_t w;
    json_w_init(&w);
    json_w_begin_obj(&w);
    json_w_key(&w, "format");
    json_w_int(&w, 1);
    json_w_key(&w, "domains");
    json_w_begin_arr(&w);
    for (int i = 0; i < s->n; i++) {
        const tstate_domain_t *d = &s->d[i];
        json_w_begin_obj(&w);
        json_w_key(&w, "name");
        json_w_string(&w, d->name);
        json_w_key(&w, "cursor");
        json_w_int(&w, (int64_t)d->cursor);
        json_w_key(&w, "tried");
        json_w_int(&w, (int64_t)d->tried);
        json_w_key(&w, "version");
        json_w_int(&w, (int64_t)d->version);
        json_w_key(&w, "result");
        json_w_string(&w, d->result);
        json_w_end_obj(&w);
    }
    json_w_end_arr(&w);
    json_w_key(&w, "job");
    json_w_begin_obj(&w);
    json_w_key(&w, "phase");
    json_w_string(&w, phase_name(s->job.phase));
    json_w_key(&w, "id");
    json_w_string(&w, s->job.id);
    json_w_key(&w, "domain");
    json_w_string(&w, s->job.domain);
    json_w_key(&w, "cursor");
    json_w_int(&w, (int64_t)s->job.cursor);
    json_w_key(&w, "started_us");
    json_w_int(&w, s->job.started_us);
    json_w_key(&w, "restarts");
    json_w_int(&w, s->job.restarts);
    json_w_end_obj(&w);
    json_w_end_obj(&w);
    size_t len = 0;
    char *text = json_w_finish(&w, &len, err);
    if (!text) return err->code ? err->code : ERR_NOMEM;

    char tmp[4200], dir[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    else snprintf(dir, sizeof dir, ".");
    int rc = 0;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) rc = err_errno(err, ERR_IO, errno, "creating %s", tmp);
    size_t off = 0;
    while (!rc && off < len) {
        ssize_t k = write(fd, text + off, len - off);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) rc = err_errno(err, ERR_IO, errno, "writing %s", tmp);
        else off += (size_t)k;
    }
    if (!rc && fsync(fd)) rc = err_errno(err, ERR_IO, errno, "fsync %s", tmp);
    if (fd >= 0 && close(fd) && !rc) rc = err_errno(err, ERR_IO, errno, "closing %s", tmp);
    if (!rc && rename(tmp, path)) rc = err_errno(err, ERR_IO, errno, "saving %s", path);
    if (rc) unlink(tmp);
    if (!rc) {
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
    }
    free(text);
    return rc;
}

tstate_domain_t *tstate_domain(tstate_t *s, const char *name, int create)
{
    if (strlen(name) > 64) return NULL;
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->d[i].name, name)) return &s->d[i];
    if (!create || s->n >= TSTATE_MAX_DOMAINS) return NULL;
    tstate_domain_t *d = &s->d[s->n++];
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "%s", name);
    return d;
}
