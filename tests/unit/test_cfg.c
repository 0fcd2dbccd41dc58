/* test_cfg — common/cfg: defaults, file, command line, precedence, and every error naming the
 * key and the file line (unknown key, bad value, range, duplicate, missing file, bad section,
 * missing value, required key, bad endpoint, too many positionals).
 *
 *   test_cfg [OUT_DIR]   (config files are written there; default /tmp)
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"
#include "svc.h"
#include "t_check.h"

static const cfg_key_t schema[] = {
    SVC_CFG_KEYS("ipc:///tmp/moda-test.sock"),
    {"ratio", CFG_DOUBLE, "0.5", 0, 1, "a fraction"},
    {"name", CFG_STRING, "cam", 0, 8, "short name"},
    {"fast", CFG_BOOL, "false", 0, 0, "go fast"},
    {"db.path", CFG_STRING, "/tmp/db", 0, 0, "in a [db] section"},
    {"need", CFG_STRING, NULL, 0, 0, "required"},
    CFG_END,
};

static char dir[400];

static const char *write_file(const char *name, const char *text)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    T(f != NULL);
    if (f) {
        fputs(text, f);
        fclose(f);
    }
    return path;
}

/* Parse argv (NULL-terminated, argv[0] added) with a fresh cfg; returns rc, err in *e. */
static int parse(cfg_t **c, err_t *e, const char **args)
{
    const char *argv[32] = {"prog"};
    int argc = 1;
    while (args[argc - 1]) {
        argv[argc] = args[argc - 1];
        argc++;
    }
    *c = cfg_new("prog", "[options] [THING]", "test program", schema, 1, e);
    T(*c != NULL);
    if (!*c) return -1;
    return cfg_parse(*c, argc, (char **)argv, e);
}

#define PARSE(...) parse(&c, &e, (const char *[]){__VA_ARGS__, NULL})

int main(int argc, char **argv)
{
    t_watchdog(30);
    snprintf(dir, sizeof dir, "%s", argc > 1 ? argv[1] : "/tmp");
    cfg_t *c = NULL;
    err_t e = {0};

    /* defaults + command line forms */
    T(PARSE("--need", "x") == 0);
    T(cfg_int(c, "hwm") == 1000 && cfg_double(c, "ratio") == 0.5 && !cfg_bool(c, "fast"));
    T(!strcmp(cfg_str(c, "bind"), "ipc:///tmp/moda-test.sock"));
    T(!strcmp(cfg_origin(c, "hwm"), "default") && !strcmp(cfg_origin(c, "need"), "--need"));
    T(cfg_npositional(c) == 0);
    cfg_destroy(&c);
    T(c == NULL);
    T(PARSE("--need=y", "--hwm", "5", "--set", "ratio=0.25", "--fast", "--max-msg-bytes", "2048",
            "THING") == 0);
    T(!strcmp(cfg_str(c, "need"), "y") && cfg_int(c, "hwm") == 5 && cfg_double(c, "ratio") == 0.25);
    T(cfg_bool(c, "fast") && cfg_int(c, "max_msg_bytes") == 2048);
    T(cfg_npositional(c) == 1 && !strcmp(cfg_positional(c, 0), "THING"));
    cfg_destroy(&c);
    T(PARSE("--need", "z", "--fast", "--no-fast", "--fast=off") == 0 && !cfg_bool(c, "fast"));
    cfg_destroy(&c);
    T(PARSE("--help") == CFG_HELP);
    cfg_destroy(&c);
    T(PARSE("--bogus", "--version") == CFG_VERSION);
    cfg_destroy(&c);

    /* file, sections, comments, quotes; command line wins over the file */
    const char *ok = write_file("ok.conf", "# comment\n"
                                           "hwm = 7   # trailing comment\n"
                                           "\n"
                                           "name = \"a#b\"\n"
                                           "need=from-file\n"
                                           "[db]\n"
                                           "path = /var/lib/moda\n");
    T(PARSE("--config", ok, "--hwm", "9") == 0);
    T(cfg_int(c, "hwm") == 9 && !strcmp(cfg_str(c, "name"), "a#b"));
    T(!strcmp(cfg_str(c, "db.path"), "/var/lib/moda") && !strcmp(cfg_str(c, "need"), "from-file"));
    char want[600];
    snprintf(want, sizeof want, "%s:7", ok);
    T(!strcmp(cfg_origin(c, "db.path"), want));
    cfg_destroy(&c);

    /* errors in files name the file, the line and the key */
    const char *p = write_file("unknown.conf", "hwm = 3\n\n# x\nhwn = 4\n");
    T(PARSE("--config", p) == ERR_CONFIG);
    snprintf(want, sizeof want, "%s:4: unknown key 'hwn'", p);
    T_HAS(e.msg, want);
    cfg_destroy(&c);
    p = write_file("badval.conf", "need = x\nhwm = lots\n");
    T(PARSE("--config", p) == ERR_CONFIG);
    snprintf(want, sizeof want, "%s:2: bad value 'lots' for 'hwm': not an integer", p);
    T_HAS(e.msg, want);
    cfg_destroy(&c);
    p = write_file("range.conf", "ratio = 1.5\n");
    T(PARSE("--config", p) == ERR_CONFIG);
    T_HAS(e.msg, ":1: bad value '1.5' for 'ratio': outside [0, 1]");
    cfg_destroy(&c);
    p = write_file("dup.conf", "hwm = 1\nratio = 0.1\nhwm = 2\n");
    T(PARSE("--config", p) == ERR_CONFIG);
    T_HAS(e.msg, ":3: duplicate key 'hwm' (first set on line 1)");
    cfg_destroy(&c);
    p = write_file("nosec.conf", "[db\npath = x\n");
    T(PARSE("--config", p) == ERR_CONFIG);
    T_HAS(e.msg, ":1: bad section header");
    cfg_destroy(&c);
    p = write_file("noeq.conf", "need x\n");
    T(PARSE("--config", p) == ERR_CONFIG);
    T_HAS(e.msg, ":1: expected 'key = value'");
    cfg_destroy(&c);
    p = write_file("ep.conf", "bind = ipc:///tmp/" "0123456789012345678901234567890123456789"
                              "01234567890123456789012345678901234567890123456789.sock\n");
    T(PARSE("--config", p) == ERR_CONFIG);
    T_HAS(e.msg, ":1: bad value for 'bind': endpoint 'ipc:///tmp/");
    T_HAS(e.msg, "ipc path must be 1..99 characters");
    cfg_destroy(&c);
    p = write_file("len.conf", "name = muchtoolong\n");
    T(PARSE("--config", p) == ERR_CONFIG);
    T_HAS(e.msg, "bad value for 'name': longer than 8 characters");
    cfg_destroy(&c);
    snprintf(want, sizeof want, "%s/does-not-exist.conf", dir);
    T(PARSE("--config", want) == ERR_CONFIG);
    T_HAS(e.msg, "cannot open config file '");
    T_HAS(e.msg, "does-not-exist.conf': No such file or directory");
    cfg_destroy(&c);

    /* errors on the command line name the option and the key */
    T(PARSE("--need", "x", "--hwm", "0") == ERR_CONFIG);
    T_HAS(e.msg, "--hwm: bad value '0' for 'hwm': outside [1, 10000000]");
    cfg_destroy(&c);
    T(PARSE("--need", "x", "--frobnicate", "1") == ERR_CONFIG);
    T_HAS(e.msg, "unknown option '--frobnicate': no key 'frobnicate'");
    cfg_destroy(&c);
    T(PARSE("--need", "x", "--set", "nope=1") == ERR_CONFIG);
    T_HAS(e.msg, "--set nope: unknown key 'nope'");
    cfg_destroy(&c);
    T(PARSE("--need", "x", "--set", "ratio") == ERR_CONFIG);
    T_HAS(e.msg, "expected KEY=VALUE");
    cfg_destroy(&c);
    T(PARSE("--need", "x", "--fast=maybe") == ERR_CONFIG);
    T_HAS(e.msg, "--fast: bad value 'maybe' for 'fast': expected true or false");
    cfg_destroy(&c);
    T(PARSE("--need", "x", "--hwm") == ERR_CONFIG);
    T_HAS(e.msg, "--hwm: missing value for 'hwm'");
    cfg_destroy(&c);
    T(PARSE("--hwm", "3") == ERR_CONFIG);
    T_HAS(e.msg, "missing required key 'need'");
    cfg_destroy(&c);
    T(PARSE("--need", "x", "a", "b") == ERR_CONFIG);
    T_HAS(e.msg, "unexpected argument 'b'");
    cfg_destroy(&c);
    T(PARSE("--need", "x", "--bind", "tcp://*:99999") == ERR_CONFIG);
    T_HAS(e.msg, "--bind: bad value for 'bind': endpoint 'tcp://*:99999': port '99999'");
    cfg_destroy(&c);
    T(PARSE("--need", "x", "--config") == ERR_CONFIG);
    T_HAS(e.msg, "--config: missing FILE");
    cfg_destroy(&c);

    /* a bad schema is caught at cfg_new */
    static const cfg_key_t bad_schema[] = {{"n", CFG_INT, "12", 0, 10, "x"}, CFG_END};
    T(cfg_new("p", NULL, NULL, bad_schema, 0, &e) == NULL);
    T_HAS(e.msg, "config schema of p: default: bad value '12' for 'n'");
    static const cfg_key_t dup_schema[] = {{"n", CFG_INT, "1", 0, 0, ""},
                                           {"n", CFG_INT, "1", 0, 0, ""}, CFG_END};
    T(cfg_new("p", NULL, NULL, dup_schema, 0, &e) == NULL);
    T_HAS(e.msg, "key 'n' declared twice");

    /* svc_opts_from_cfg maps the common keys */
    T(PARSE("--need", "x", "--hwm", "77", "--max-envelope-bytes", "4096", "--log-level", "warn") ==
      0);
    svc_opts_t o;
    T(svc_opts_from_cfg(&o, "t", c, &e) == 0);
    T(o.sockopt.sndhwm == 77 && o.sockopt.rcvhwm == 77 && o.limits.max_envelope_bytes == 4096);
    T(!strcmp(o.control_endpoint, "ipc:///tmp/moda-test.sock"));
    cfg_destroy(&c);
    T(PARSE("--need", "x", "--log-level", "loud") == 0);
    T(svc_opts_from_cfg(&o, "t", c, &e) == ERR_CONFIG);
    T_HAS(e.msg, "--log-level: bad value 'loud' for 'log_level'");
    cfg_destroy(&c);

    /* help lists every key with its default */
    T(PARSE("--need", "x") == 0);
    char help[8192] = "";
    FILE *f = fmemopen(help, sizeof help - 1, "w");
    cfg_write_help(c, f);
    fclose(f);
    for (const cfg_key_t *k = schema; k->name; k++) {
        char dashed[64];
        snprintf(dashed, sizeof dashed, "--%s", k->name);
        for (char *q = dashed + 2; *q; q++)
            if (*q == '_') *q = '-';
        T_HAS(help, dashed);
    }
    T_HAS(help, "usage: prog [options] [THING]");
    T_HAS(help, "default 0.5");
    T_HAS(help, "required");
    cfg_destroy(&c);
    return t_done("test_cfg");
}
