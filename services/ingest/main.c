/* moda-ingest — cameras in, Frame messages out to infer (PUSH; see ingest.h, docs/ingest.md).
 *
 * main: build the config schema (it depends on the [camera.ID] sections of --config), parse,
 * start the service (Health on the control socket) and the cameras, run until SIGTERM/SIGINT,
 * stop the cameras (draining their queues for drain_ms) and map the result to an exit code.
 */
#include <stdio.h>

#include "cfg.h"
#include "ingest.h"
#include "log.h"
#include "svc.h"

static const char summary[] =
    "cameras in, Frame messages out to infer (PUSH). One camera from the command line "
    "(--camera-id ID --source folder:DIR|video:FILE|rtsp://...|synthetic:WxH --fps N --connect "
    "ENDPOINT) and/or [camera.ID] sections (source, fps, queue_len) in the --config file. When "
    "infer is behind, the oldest queued frames are dropped and counted per camera.";

int main(int argc, char **argv)
{
    err_t err = {0};
    log_set_name("ingest");
    cfg_key_t *schema = ingest_schema(argc, argv, &err);
    cfg_t *cfg = schema ? cfg_new("moda-ingest", "[options]", summary, schema, 0, &err) : NULL;
    int rc = cfg ? cfg_parse(cfg, argc, argv, &err) : err.code;
    if (rc == CFG_HELP || rc == CFG_VERSION) {
        if (rc == CFG_HELP) cfg_write_help(cfg, stdout);
        else printf("moda-ingest %s (schema %u)\n", MODA_VERSION, MSG_SCHEMA_VERSION);
        cfg_destroy(&cfg);
        ingest_schema_free(&schema);
        return 0;
    }
    static ingest_cfg_t icfg;
    svc_opts_t opts;
    svc_t *svc = NULL;
    ingest_t *ing = NULL;
    if (!rc) rc = ingest_cfg_load(&icfg, cfg, schema, &err);
    if (!rc) rc = svc_opts_from_cfg(&opts, "ingest", cfg, &err);
    if (!rc && !(svc = svc_new(&opts, &err))) rc = err.code;
    if (!rc && !(ing = ingest_new(svc, &icfg, &err))) rc = err.code;
    if (!rc) rc = svc_run(svc, &err);
    ingest_destroy(&ing);
    if (rc) log_error("event=exit code=%d msg=\"%s\"", rc, err.msg);
    svc_destroy(&svc);
    cfg_destroy(&cfg);
    ingest_schema_free(&schema);
    return err_exit_status(rc);
}
