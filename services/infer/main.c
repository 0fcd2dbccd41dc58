/* moda-infer — segments frames with SAM + the active adapter bank, publishes Results,
 * sends hard cases to moda-label, follows the registry's bank alias (docs/infer.md).
 *
 *   moda-infer [--frames EP] [--results EP] [--model FILE] [--registry EP --registry-pub EP]
 *              [--label EP] [--device cpu|cuda|auto] [--config FILE]
 *
 * Thin: configuration, then the service loop with infer.c's sockets until SIGTERM/SIGINT
 * (exit 0).
 */
#include <stdio.h>

#include "cfg.h"
#include "infer.h"
#include "log.h"
#include "svc.h"

static const char summary[] =
    "Segments frames with SAM + the active adapter bank and publishes Results;\n"
    "hard cases go to moda-label; the bank follows the registry alias (hot swap).";

static const cfg_key_t keys[] = {
    SVC_CFG_KEYS("ipc:///tmp/moda-infer.sock"),
    INFER_CFG_KEYS,
    CFG_END,
};

int main(int argc, char **argv)
{
    err_t err = {0};
    log_set_name("infer");
    cfg_t *cfg = cfg_new("moda-infer", "[options]", summary, keys, 0, &err);
    int rc = cfg ? cfg_parse(cfg, argc, argv, &err) : err.code;
    if (rc == CFG_HELP || rc == CFG_VERSION) {
        if (rc == CFG_HELP) cfg_write_help(cfg, stdout);
        else printf("moda-infer %s (schema %u)\n", MODA_VERSION, MSG_SCHEMA_VERSION);
        cfg_destroy(&cfg);
        return 0;
    }
    svc_opts_t opts;
    svc_t *svc = NULL;
    infer_t *inf = NULL;
    if (!rc) rc = svc_opts_from_cfg(&opts, "infer", cfg, &err);
    if (!rc && !(svc = svc_new(&opts, &err))) rc = err.code;
    if (!rc && !(inf = infer_new(svc, cfg, &err))) rc = err.code;
    if (!rc) rc = svc_run(svc, &err);
    if (rc) log_error("event=exit code=%d msg=\"%s\"", rc, err.msg);
    infer_destroy(&inf);
    svc_destroy(&svc);
    cfg_destroy(&cfg);
    return err_exit_status(rc);
}
