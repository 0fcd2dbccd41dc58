/* moda health — ask one service for its HealthReply over its control socket.
 *
 *   moda health ipc:///tmp/moda-infer.sock [--timeout-ms 2000] [--json]
 *
 * Exit 0 when the service answered with status OK and state SERVING; 1 when it did not answer
 * in time, answered with an error, or is not serving; 2 on bad arguments.
 */
#include <stdio.h>
#include <string.h>

#include "cfg.h"
#include "client.h"
#include "cmds.h"
#include "msg.h"

static const cfg_key_t keys[] = {
    {"timeout_ms", CFG_INT, "2000", 1, 600000, "give up after this many milliseconds"},
    {"json", CFG_BOOL, "false", 0, 0, "print the reply as one JSON object"},
    CFG_END,
};

static const char *state_name(Moda__ServiceState s)
{
    switch (s) {
    case MODA__SERVICE_STATE__SERVICE_STATE_STARTING: return "starting";
    case MODA__SERVICE_STATE__SERVICE_STATE_SERVING: return "serving";
    case MODA__SERVICE_STATE__SERVICE_STATE_DEGRADED: return "degraded";
    case MODA__SERVICE_STATE__SERVICE_STATE_STOPPING: return "stopping";
    default: return "unspecified";
    }
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

static void print_json(const char *ep, const Moda__HealthReply *r)
{
    printf("{\"endpoint\":");
    json_str(stdout, ep);
    printf(",\"status\":{\"code\":%d,\"message\":", r->status ? (int)r->status->code : 0);
    json_str(stdout, r->status ? r->status->message : "");
    printf("},\"service\":");
    json_str(stdout, r->service);
    printf(",\"version\":");
    json_str(stdout, r->version);
    printf(",\"schema_version\":%u,\"state\":\"%s\",\"uptime_us\":%llu,\"counters\":{",
           r->schema_version, state_name(r->state), (unsigned long long)r->uptime_us);
    for (size_t i = 0; i < r->n_counters; i++) {
        if (i) putchar(',');
        json_str(stdout, r->counters[i]->name);
        printf(":%llu", (unsigned long long)r->counters[i]->value);
    }
    printf("},\"last_error\":");
    json_str(stdout, r->last_error);
    printf(",\"last_error_time_us\":%lld}\n", (long long)r->last_error_time_us);
}

static void print_text(const char *ep, const Moda__HealthReply *r)
{
    printf("endpoint    %s\nservice     %s\nversion     %s (schema %u)\nstate       %s\n"
           "uptime      %.3f s\n",
           ep, r->service, r->version, r->schema_version, state_name(r->state),
           (double)r->uptime_us / 1e6);
    if (r->status && r->status->code)
        printf("status      %d %s\n", (int)r->status->code, r->status->message);
    printf("last_error  %s\n", r->last_error && *r->last_error ? r->last_error : "-");
    for (size_t i = 0; i < r->n_counters; i++)
        printf("  %-30s %llu\n", r->counters[i]->name, (unsigned long long)r->counters[i]->value);
}

int cmd_health(int argc, char **argv)
{
    err_t err = {0};
    cfg_t *cfg = cfg_new("moda health", "ENDPOINT [--timeout-ms N] [--json]",
                         "Send a Health request to the control socket of a moda service at "
                         "ENDPOINT\n(tcp://HOST:PORT, ipc:///PATH) and print the reply. Exit 0 "
                         "when it is serving,\n1 when it does not answer in time or is not "
                         "serving, 2 on bad arguments.",
                         keys, 1, &err);
    if (!cfg) {
        fprintf(stderr, "moda health: %s\n", err.msg);
        return 2;
    }
    int rc = cfg_parse(cfg, argc, argv, &err);
    if (client_help_version(cfg, rc)) {
        cfg_destroy(&cfg);
        return 0;
    }
    if (!rc && cfg_npositional(cfg) != 1)
        rc = err_set(&err, ERR_CONFIG, "expected one ENDPOINT argument (see --help)");
    if (!rc) rc = msg_endpoint_check(cfg_positional(cfg, 0), &err);
    if (rc) {
        fprintf(stderr, "moda health: %s\n", err.msg);
        cfg_destroy(&cfg);
        return 2;
    }
    const char *ep = cfg_positional(cfg, 0);
    int timeout = (int)cfg_int(cfg, "timeout_ms"), json = cfg_bool(cfg, "json");

    msg_set_sender("moda-cli");
    int status = 1;
    client_t c;
    msg_t *reply = NULL;
    /* REQ queues the request until connected, so a late-starting service still counts. */
    rc = client_open(&c, NULL, ep, "health", timeout, &err);
    if (rc)
        err_wrap(&err, "%s", ep);
    else
        rc = client_health(&c, &reply, &err);
    if (!rc) {
        const Moda__HealthReply *r = reply->env->health_reply;
        if (json)
            print_json(ep, r);
        else
            print_text(ep, r);
        int ok = (!r->status || r->status->code == MODA__STATUS_CODE__STATUS_OK) &&
                 r->state == MODA__SERVICE_STATE__SERVICE_STATE_SERVING;
        status = ok ? 0 : 1;
    } else {
        fprintf(stderr, "moda health: %s\n", err.msg);
    }
    msg_free(&reply);
    client_close(&c);
    cfg_destroy(&cfg);
    return status;
}
