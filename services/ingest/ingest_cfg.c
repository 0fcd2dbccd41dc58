/* ingest_cfg.c — moda-ingest's configuration: a schema built at start-up from the [camera.ID]
 * sections of the config file (cfg's schema is declared, so the camera keys are declared once
 * the file names them), plus the single-camera command-line keys. See ingest.h. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest.h"

#define DEFAULT_CONNECT "ipc:///tmp/moda-infer-frames.sock"

static const cfg_key_t base_keys[] = {
    SVC_CFG_KEYS("ipc:///tmp/moda-ingest.sock"),
    {"connect", CFG_ENDPOINT, DEFAULT_CONNECT, 0, 0, "infer's frame endpoint (ingest connects PUSH)"},
    {"camera_id", CFG_STRING, "", 0, INGEST_ID_MAX, "single camera from the command line: its id"},
    {"source", CFG_STRING, "", 0, 1000,
     "single camera: folder:DIR | video:FILE | rtsp://... | http://... | synthetic:WxH"},
    {"fps", CFG_DOUBLE, "10", 0, 1000, "frames per second (0 = as fast as the source gives)"},
    {"queue_len", CFG_INT, "2", 1, 1024, "SDK queue per camera; beyond it the oldest frame drops"},
    {"sndhwm", CFG_INT, "1", 1, 1000, "ZMQ_SNDHWM of each camera's PUSH socket"},
    {"loop", CFG_BOOL, "true", 0, 0, "folder/video sources start again at the end"},
    {"stall_ms", CFG_INT, "5000", 10, 3600000, "video/stream: no data this long = reopen"},
    {"backoff_ms", CFG_INT, "200", 1, 600000, "first wait before reopening a failed source"},
    {"backoff_max_ms", CFG_INT, "10000", 1, 3600000, "cap of the doubling reopen backoff"},
    {"stats_ms", CFG_INT, "200", 10, 60000, "how often Health counters are refreshed"},
    {"drain_ms", CFG_INT, "1000", 0, 600000, "at exit: time to send frames still queued"},
};
#define NBASE ((int)(sizeof base_keys / sizeof base_keys[0]))
static const char *cam_keys[] = {"source", "fps", "queue_len"};
#define NCAMKEYS 3
#define SOURCE_HELP "source of camera "

static int id_ok(const char *id, size_t n)
{
    if (n < 1 || n > INGEST_ID_MAX) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)id[i]) && id[i] != '_' && id[i] != '-') return 0;
    return 1;
}

static const char *config_path(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc) return argv[i + 1];
        if (!strncmp(argv[i], "--config=", 9)) return argv[i] + 9;
    }
    return NULL;
}

void ingest_schema_free(cfg_key_t **schema)
{
    if (!schema || !*schema) return;
    for (cfg_key_t *k = *schema + NBASE; k->name; k++) {
        if (k->help && !strncmp(k->help, SOURCE_HELP, strlen(SOURCE_HELP))) free((char *)k->help);
        free((char *)k->name);
    }
    free(*schema);
    *schema = NULL;
}

cfg_key_t *ingest_schema(int argc, char **argv, err_t *err)
{
    char ids[INGEST_MAX_CAMS][INGEST_ID_MAX + 1];
    int n = 0;
    const char *path = config_path(argc, argv);
    if (path) {
        FILE *f = fopen(path, "r");
        if (!f) {
            err_errno(err, ERR_CONFIG, errno, "config file '%s'", path);
            return NULL;
        }
        char line[1024];
        int ln = 0, rc = 0;
        while (!rc && fgets(line, sizeof line, f)) {
            ln++;
            char *s = line;
            while (isspace((unsigned char)*s)) s++;
            if (strncmp(s, "[camera.", 8)) continue;
            char *e = strchr(s, ']');
            size_t len = e ? (size_t)(e - s - 8) : 0;
            if (!e || !id_ok(s + 8, len))
                rc = err_set(err, ERR_CONFIG, "%s:%d: camera section wants [camera.ID] with ID of "
                             "1..%d chars [A-Za-z0-9_-]", path, ln, INGEST_ID_MAX);
            else if (n == INGEST_MAX_CAMS)
                rc = err_set(err, ERR_CONFIG, "%s:%d: more than %d cameras in one process", path,
                             ln, INGEST_MAX_CAMS);
            else
                snprintf(ids[n++], sizeof ids[0], "%.*s", (int)len, s + 8);
        }
        fclose(f);
        if (rc) return NULL;
    }
    cfg_key_t *k = calloc((size_t)(NBASE + n * NCAMKEYS + 1), sizeof *k);
    if (!k) {
        err_set(err, ERR_NOMEM, "config schema");
        return NULL;
    }
    memcpy(k, base_keys, sizeof base_keys);
    int j = NBASE;
    for (int i = 0; i < n; i++) {
        /* cfg matches '-' in a key as '_', so a declared name must not contain '-': the key is
         * declared with '_' and the source row's help text carries the real id */
        char under[INGEST_ID_MAX + 1];
        snprintf(under, sizeof under, "%s", ids[i]);
        for (char *u = under; *u; u++)
            if (*u == '-') *u = '_';
        for (int q = 0; q < NCAMKEYS; q++) {
            char name[128];
            snprintf(name, sizeof name, "camera.%s.%s", under, cam_keys[q]);
            cfg_key_t *r = &k[j];
            char help[96];
            snprintf(help, sizeof help, "%s%s", SOURCE_HELP, ids[i]);
            if (!(r->name = strdup(name)) || (q == 0 && !(r->help = strdup(help)))) {
                ingest_schema_free(&k);
                err_set(err, ERR_NOMEM, "config schema");
                return NULL;
            }
            j++;
            if (q == 0) *r = (cfg_key_t){r->name, CFG_STRING, NULL, 0, 1000, r->help};
            if (q == 1)
                *r = (cfg_key_t){r->name, CFG_DOUBLE, "-1", -1, 1000, "fps (-1 = the top-level fps)"};
            if (q == 2)
                *r = (cfg_key_t){r->name, CFG_INT, "0", 0, 1024, "queue_len (0 = the top-level one)"};
        }
    }
    return k;
}

static int add_cam(ingest_cfg_t *c, const cfg_t *cfg, const char *id, const char *src_key,
                   double fps, int queue_len, err_t *err)
{
    if (c->ncams == INGEST_MAX_CAMS)
        return err_set(err, ERR_CONFIG, "more than %d cameras in one process", INGEST_MAX_CAMS);
    for (int i = 0; i < c->ncams; i++)
        if (!strcmp(c->cams[i].id, id))
            return err_set(err, ERR_CONFIG, "camera id '%s' is used twice", id);
    ingest_cam_cfg_t *cam = &c->cams[c->ncams];
    memset(cam, 0, sizeof *cam);
    if (!id_ok(id, strlen(id)))
        return err_set(err, ERR_CONFIG, "camera id '%s': want 1..%d chars [A-Za-z0-9_-]", id,
                       INGEST_ID_MAX);
    snprintf(cam->id, sizeof cam->id, "%s", id);
    err_t e = {0};
    if (source_spec_parse(&cam->src, cfg_str(cfg, src_key), &e))
        return err_set(err, ERR_CONFIG, "%s (%s): %s", src_key, cfg_origin(cfg, src_key), e.msg);
    cam->src.loop = cfg_bool(cfg, "loop");
    cam->src.stall_ms = (int)cfg_int(cfg, "stall_ms");
    cam->fps = fps;
    cam->queue_len = queue_len;
    c->ncams++;
    return 0;
}

int ingest_cfg_load(ingest_cfg_t *c, const cfg_t *cfg, const cfg_key_t *schema, err_t *err)
{
    memset(c, 0, sizeof *c);
    snprintf(c->connect, sizeof c->connect, "%s", cfg_str(cfg, "connect"));
    c->sndhwm = (int)cfg_int(cfg, "sndhwm");
    c->linger_ms = (int)cfg_int(cfg, "drain_ms");
    c->backoff_ms = (int)cfg_int(cfg, "backoff_ms");
    c->backoff_max_ms = (int)cfg_int(cfg, "backoff_max_ms");
    if (c->backoff_max_ms < c->backoff_ms) c->backoff_max_ms = c->backoff_ms;
    c->stats_ms = (int)cfg_int(cfg, "stats_ms");
    double fps = cfg_double(cfg, "fps");
    int ql = (int)cfg_int(cfg, "queue_len");
    const char *id = cfg_str(cfg, "camera_id"), *src = cfg_str(cfg, "source");
    if (*id || *src) {
        if (!*id || !*src)
            return err_set(err, ERR_CONFIG, "a command-line camera needs both --camera-id and --source");
        int rc = add_cam(c, cfg, id, "source", fps, ql, err);
        if (rc) return rc;
    }
    /* the [camera.ID] sections: rows NBASE.. of the schema, NCAMKEYS per camera */
    for (const cfg_key_t *k = schema + NBASE; k->name; k += NCAMKEYS) {
        char cid[INGEST_ID_MAX + 1];
        snprintf(cid, sizeof cid, "%s", k->help + strlen(SOURCE_HELP));
        double cf = cfg_double(cfg, k[1].name);
        int cq = (int)cfg_int(cfg, k[2].name);
        int rc = add_cam(c, cfg, cid, k->name, cf < 0 ? fps : cf, cq ? cq : ql, err);
        if (rc) return rc;
    }
    if (!c->ncams)
        return err_set(err, ERR_CONFIG, "no camera: give --camera-id ID --source SPEC, or [camera.ID] "
                       "sections in the --config file");
    return 0;
}
