/* moda-ingest — camera frames in, Frame messages out to infer (PUSH).
 *
 * Thin for now: parses its configuration, binds the control socket and runs the service loop
 * answering Health until SIGTERM/SIGINT (exit 0). Service logic registers its sockets with
 * svc_add_socket between svc_new and svc_run.
 */
#include <stdio.h>

#include "cfg.h"
#include "log.h"
#include "svc.h"

static const char summary[] =
    "camera frames in, Frame messages out to infer (PUSH).";

static const cfg_key_t keys[] = {
    SVC_CFG_KEYS("ipc:///tmp/moda-ingest.sock"),
    CFG_END,
};

int main(int argc, char **argv)
{
    err_t err = {0};
    log_set_name("ingest");
    cfg_t *cfg = cfg_new("moda-ingest", "[options]", summary, keys, 0, &err);
    int rc = cfg ? cfg_parse(cfg, argc, argv, &err) : err.code;
    if (rc == CFG_HELP || rc == CFG_VERSION) {
        if (rc == CFG_HELP) cfg_write_help(cfg, stdout);
        else printf("moda-ingest %s (schema %u)\n", MODA_VERSION, MSG_SCHEMA_VERSION);
        cfg_destroy(&cfg);
        return 0;
    }
    svc_opts_t opts;
    svc_t *svc = NULL;
    if (!rc) rc = svc_opts_from_cfg(&opts, "ingest", cfg, &err);
    if (!rc && !(svc = svc_new(&opts, &err))) rc = err.code;
    if (!rc) rc = svc_run(svc, &err);
    if (rc) log_error("event=exit code=%d msg=\"%s\"", rc, err.msg);
    svc_destroy(&svc);
    cfg_destroy(&cfg);
    return err_exit_status(rc);
}
