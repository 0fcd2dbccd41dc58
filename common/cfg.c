/* cfg.c — schema-validated configuration from a file and the command line (see cfg.h).
 *
 * Each key's value is kept as text plus its parsed form; a value is parsed and range-checked
 * when set, so a getter never fails. Defaults are validated by cfg_new, so a schema mistake
 * shows up at start-up, not when the key is first used.
 */
#include "cfg.h"

#include <ctype.h>
#include <strings.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "msg.h"

#define CFG_ORIGIN_MAX 96
#define CFG_LINE_MAX 4096

typedef struct cfg_val {
    char *text; /* NULL: unset (required key without default) */
    int64_t i;
    double d;
    int b;
    char origin[CFG_ORIGIN_MAX];
    int file_line; /* line in the file being loaded, 0 if not set by it (duplicate check) */
} cfg_val_t;

struct cfg {
    const char *prog, *usage, *summary;
    const cfg_key_t *schema;
    int nkeys;
    cfg_val_t *vals;
    const char **pos;
    int npos, maxpos;
};

static const char *type_name(cfg_type_t t)
{
    switch (t) {
    case CFG_INT: return "int";
    case CFG_DOUBLE: return "double";
    case CFG_STRING: return "string";
    case CFG_BOOL: return "bool";
    case CFG_ENDPOINT: return "endpoint";
    }
    return "?";
}

/* Index of key (accepting '-' for '_'), or -1. */
static int find_key(const cfg_t *c, const char *key, size_t len)
{
    for (int i = 0; i < c->nkeys; i++) {
        const char *n = c->schema[i].name;
        if (strlen(n) != len) continue;
        size_t k = 0;
        for (; k < len; k++) {
            char a = key[k] == '-' ? '_' : key[k];
            if (a != n[k]) break;
        }
        if (k == len) return i;
    }
    return -1;
}

static int parse_bool(const char *s, int *out)
{
    static const char *t[] = {"1", "true", "yes", "on"}, *f[] = {"0", "false", "no", "off"};
    for (int i = 0; i < 4; i++) {
        if (!strcasecmp(s, t[i])) return *out = 1, 0;
        if (!strcasecmp(s, f[i])) return *out = 0, 0;
    }
    return -1;
}

/* Parse `value` for key k into v (text not yet stored). */
static int parse_value(const cfg_key_t *k, const char *value, cfg_val_t *v, const char *where,
                       err_t *err)
{
    const char *n = k->name;
    int ranged = !(k->min == 0 && k->max == 0);
    switch (k->type) {
    case CFG_INT: {
        char *end;
        errno = 0;
        long long x = strtoll(value, &end, 10);
        if (!*value || *end || errno)
            return err_set(err, ERR_CONFIG, "%s: bad value '%s' for '%s': not an integer", where,
                           value, n);
        if (ranged && ((double)x < k->min || (double)x > k->max))
            return err_set(err, ERR_CONFIG, "%s: bad value '%s' for '%s': outside [%.17g, %.17g]",
                           where, value, n, k->min, k->max);
        v->i = x;
        v->d = (double)x;
        return 0;
    }
    case CFG_DOUBLE: {
        char *end;
        errno = 0;
        double x = strtod(value, &end);
        if (!*value || *end || errno || !isfinite(x))
            return err_set(err, ERR_CONFIG, "%s: bad value '%s' for '%s': not a finite number",
                           where, value, n);
        if (ranged && (x < k->min || x > k->max))
            return err_set(err, ERR_CONFIG, "%s: bad value '%s' for '%s': outside [%g, %g]", where,
                           value, n, k->min, k->max);
        v->d = x;
        return 0;
    }
    case CFG_BOOL:
        if (parse_bool(value, &v->b))
            return err_set(err, ERR_CONFIG, "%s: bad value '%s' for '%s': expected true or false",
                           where, value, n);
        return 0;
    case CFG_STRING:
    case CFG_ENDPOINT:
        if (k->max > 0 && (double)strlen(value) > k->max)
            return err_set(err, ERR_CONFIG, "%s: bad value for '%s': longer than %.0f characters",
                           where, n, k->max);
        if (k->type == CFG_ENDPOINT) {
            err_t e2 = {0};
            if (msg_endpoint_check(value, &e2))
                return err_set(err, ERR_CONFIG, "%s: bad value for '%s': %s", where, n, e2.msg);
        }
        return 0;
    }
    return err_set(err, ERR_CONFIG, "%s: key '%s' has no valid type", where, n);
}

static int set_index(cfg_t *c, int i, const char *value, const char *where, err_t *err)
{
    cfg_val_t nv = c->vals[i];
    int rc = parse_value(&c->schema[i], value, &nv, where, err);
    if (rc) return rc;
    char *t = strdup(value);
    if (!t) return err_set(err, ERR_NOMEM, "config: out of memory");
    free(c->vals[i].text);
    nv.text = t;
    snprintf(nv.origin, sizeof nv.origin, "%s", where);
    c->vals[i] = nv;
    return 0;
}

cfg_t *cfg_new(const char *prog, const char *usage, const char *summary, const cfg_key_t *schema,
               int max_positional, err_t *err)
{
    cfg_t *c = calloc(1, sizeof *c);
    if (!c) {
        err_set(err, ERR_NOMEM, "config: out of memory");
        return NULL;
    }
    c->prog = prog ? prog : "program";
    c->usage = usage ? usage : "[options]";
    c->summary = summary ? summary : "";
    c->schema = schema;
    c->maxpos = max_positional;
    while (schema && schema[c->nkeys].name) c->nkeys++;
    c->vals = calloc((size_t)c->nkeys + 1, sizeof *c->vals);
    c->pos = calloc((size_t)max_positional + 1, sizeof *c->pos);
    if (!c->vals || !c->pos) {
        err_set(err, ERR_NOMEM, "config: out of memory");
        cfg_destroy(&c);
        return NULL;
    }
    for (int i = 0; i < c->nkeys; i++) {
        if (find_key(c, schema[i].name, strlen(schema[i].name)) != i) {
            err_set(err, ERR_CONFIG, "config schema of %s: key '%s' declared twice", c->prog,
                    schema[i].name);
            cfg_destroy(&c);
            return NULL;
        }
        if (schema[i].def && set_index(c, i, schema[i].def, "default", err)) {
            err_wrap(err, "config schema of %s", c->prog);
            cfg_destroy(&c);
            return NULL;
        }
    }
    return c;
}

void cfg_destroy(cfg_t **cp)
{
    if (!cp || !*cp) return;
    cfg_t *c = *cp;
    for (int i = 0; c->vals && i < c->nkeys; i++) free(c->vals[i].text);
    free(c->vals);
    free(c->pos);
    free(c);
    *cp = NULL;
}

int cfg_set(cfg_t *c, const char *key, const char *value, const char *where, err_t *err)
{
    int i = find_key(c, key, strlen(key));
    if (i < 0) return err_set(err, ERR_CONFIG, "%s: unknown key '%s'", where, key);
    return set_index(c, i, value, where, err);
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = '\0';
    return s;
}

int cfg_load_file(cfg_t *c, const char *path, err_t *err)
{
    FILE *f = fopen(path, "r");
    if (!f) return err_errno(err, ERR_CONFIG, errno, "cannot open config file '%s'", path);
    for (int i = 0; i < c->nkeys; i++) c->vals[i].file_line = 0;
    char line[CFG_LINE_MAX], section[128] = "", where[CFG_ORIGIN_MAX];
    int lineno = 0, rc = 0;
    while (!rc && fgets(line, sizeof line, f)) {
        lineno++;
        size_t len = strlen(line);
        snprintf(where, sizeof where, "%s:%d", path, lineno);
        if (len == sizeof line - 1 && line[len - 1] != '\n' && !feof(f)) {
            rc = err_set(err, ERR_CONFIG, "%s: line longer than %d characters", where,
                         CFG_LINE_MAX - 2);
            break;
        }
        /* Strip comments: '#' at the start or after whitespace, outside quotes. */
        int inq = 0;
        for (char *p = line; *p; p++) {
            if (*p == '"') inq = !inq;
            if (*p == '#' && !inq && (p == line || isspace((unsigned char)p[-1]))) {
                *p = '\0';
                break;
            }
        }
        char *s = trim(line);
        if (!*s) continue;
        if (*s == '[') {
            char *e = strchr(s, ']');
            if (!e || e[1] != '\0' || e == s + 1 || (size_t)(e - s - 1) >= sizeof section) {
                rc = err_set(err, ERR_CONFIG, "%s: bad section header '%s'", where, s);
                break;
            }
            *e = '\0';
            snprintf(section, sizeof section, "%s", trim(s + 1));
            continue;
        }
        char *eq = strchr(s, '=');
        if (!eq) {
            rc = err_set(err, ERR_CONFIG, "%s: expected 'key = value', got '%s'", where, s);
            break;
        }
        *eq = '\0';
        char *key = trim(s), *val = trim(eq + 1);
        size_t vn = strlen(val);
        if (vn >= 2 && val[0] == '"' && val[vn - 1] == '"') {
            val[vn - 1] = '\0';
            val++;
        }
        char full[256];
        if (!*key) {
            rc = err_set(err, ERR_CONFIG, "%s: missing key before '='", where);
            break;
        }
        if (section[0])
            snprintf(full, sizeof full, "%s.%s", section, key);
        else
            snprintf(full, sizeof full, "%s", key);
        int i = find_key(c, full, strlen(full));
        if (i < 0) {
            rc = err_set(err, ERR_CONFIG, "%s: unknown key '%s'", where, full);
            break;
        }
        if (c->vals[i].file_line) {
            rc = err_set(err, ERR_CONFIG, "%s: duplicate key '%s' (first set on line %d)", where,
                         full, c->vals[i].file_line);
            break;
        }
        rc = set_index(c, i, val, where, err);
        if (!rc) c->vals[i].file_line = lineno;
    }
    if (!rc && ferror(f)) rc = err_errno(err, ERR_CONFIG, errno, "reading config file '%s'", path);
    fclose(f);
    return rc;
}

/* True if a is "--name" or "--name=...". */
static int is_opt(const char *a, const char *name)
{
    size_t n = strlen(name);
    return !strncmp(a, name, n) && (a[n] == '\0' || a[n] == '=');
}

int cfg_parse(cfg_t *c, int argc, char **argv, err_t *err)
{
    const char *config = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--")) break;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return CFG_HELP;
        if (!strcmp(a, "--version")) return CFG_VERSION;
        if (is_opt(a, "--config")) {
            if (a[8] == '=')
                config = a + 9;
            else if (i + 1 < argc)
                config = argv[++i];
            else
                return err_set(err, ERR_CONFIG, "--config: missing FILE argument");
        }
    }
    if (config) {
        int rc = cfg_load_file(c, config, err);
        if (rc) return rc;
    }
    c->npos = 0;
    int opts_done = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        char where[CFG_ORIGIN_MAX];
        if (opts_done || a[0] != '-' || !strcmp(a, "-")) {
            if (c->npos >= c->maxpos)
                return err_set(err, ERR_CONFIG, "unexpected argument '%s' (see --help)", a);
            c->pos[c->npos++] = a;
            continue;
        }
        if (!strcmp(a, "--")) {
            opts_done = 1;
            continue;
        }
        if (is_opt(a, "--config")) {
            if (a[8] != '=') i++;
            continue;
        }
        if (!strcmp(a, "--set")) {
            if (i + 1 >= argc) return err_set(err, ERR_CONFIG, "--set: missing KEY=VALUE");
            const char *kv = argv[++i], *eq = strchr(kv, '=');
            if (!eq) return err_set(err, ERR_CONFIG, "--set %s: expected KEY=VALUE", kv);
            char key[256];
            snprintf(key, sizeof key, "%.*s", (int)(eq - kv), kv);
            snprintf(where, sizeof where, "--set %.80s", key);
            int rc = cfg_set(c, key, eq + 1, where, err);
            if (rc) return rc;
            continue;
        }
        if (a[1] != '-')
            return err_set(err, ERR_CONFIG, "unknown option '%s' (see --help)", a);
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        int k = find_key(c, name, len);
        int negate = 0;
        if (k < 0 && !eq && !strncmp(name, "no-", 3)) {
            k = find_key(c, name + 3, len - 3);
            negate = k >= 0 && c->schema[k].type == CFG_BOOL;
            if (!negate) k = -1;
        }
        if (k < 0)
            return err_set(err, ERR_CONFIG, "unknown option '--%.*s': no key '%.*s' (see --help)",
                           (int)len, name, (int)len, name);
        snprintf(where, sizeof where, "--%.*s", (int)len, name);
        const char *val;
        if (eq)
            val = eq + 1;
        else if (c->schema[k].type == CFG_BOOL)
            val = negate ? "false" : "true";
        else if (i + 1 < argc)
            val = argv[++i];
        else
            return err_set(err, ERR_CONFIG, "%s: missing value for '%s'", where,
                           c->schema[k].name);
        int rc = set_index(c, k, val, where, err);
        if (rc) return rc;
    }
    for (int i = 0; i < c->nkeys; i++)
        if (!c->vals[i].text)
            return err_set(err, ERR_CONFIG, "missing required key '%s' (%s)", c->schema[i].name,
                           c->schema[i].help ? c->schema[i].help : type_name(c->schema[i].type));
    return 0;
}

static const cfg_val_t *get(const cfg_t *c, const char *key, cfg_type_t t1, cfg_type_t t2)
{
    int i = find_key(c, key, strlen(key));
    CHECK(i >= 0);
    CHECK(c->schema[i].type == t1 || c->schema[i].type == t2);
    CHECK(c->vals[i].text != NULL);
    return &c->vals[i];
}

int64_t cfg_int(const cfg_t *c, const char *key)
{
    return get(c, key, CFG_INT, CFG_INT)->i;
}

double cfg_double(const cfg_t *c, const char *key)
{
    return get(c, key, CFG_DOUBLE, CFG_INT)->d;
}

const char *cfg_str(const cfg_t *c, const char *key)
{
    return get(c, key, CFG_STRING, CFG_ENDPOINT)->text;
}

int cfg_bool(const cfg_t *c, const char *key)
{
    return get(c, key, CFG_BOOL, CFG_BOOL)->b;
}

const char *cfg_origin(const cfg_t *c, const char *key)
{
    int i = find_key(c, key, strlen(key));
    CHECK(i >= 0);
    return c->vals[i].text ? c->vals[i].origin : "unset";
}

int cfg_npositional(const cfg_t *c)
{
    return c->npos;
}

const char *cfg_positional(const cfg_t *c, int i)
{
    CHECK(i >= 0 && i < c->npos);
    return c->pos[i];
}

void cfg_write_help(const cfg_t *c, FILE *f)
{
    fprintf(f, "usage: %s %s\n\n%s\n\noptions (also `key = value` lines in --config FILE):\n",
            c->prog, c->usage, c->summary);
    fprintf(f, "  %-30s %s\n", "--config FILE", "read options from FILE first");
    fprintf(f, "  %-30s %s\n", "--set KEY=VALUE", "set any key");
    fprintf(f, "  %-30s %s\n", "--help, --version", "print this text / the version");
    for (int i = 0; i < c->nkeys; i++) {
        const cfg_key_t *k = &c->schema[i];
        char opt[128], range[96] = "";
        char dashed[96];
        snprintf(dashed, sizeof dashed, "%s", k->name);
        for (char *p = dashed; *p; p++)
            if (*p == '_') *p = '-';
        snprintf(opt, sizeof opt, "--%s %s", dashed,
                 k->type == CFG_BOOL ? "[true|false]" : k->type == CFG_ENDPOINT ? "ENDPOINT"
                                                                               : "VALUE");
        if ((k->type == CFG_INT || k->type == CFG_DOUBLE) && !(k->min == 0 && k->max == 0))
            snprintf(range, sizeof range, ", %.15g..%.15g", k->min, k->max);
        fprintf(f, "  %-30s %s (%s%s, %s%s)\n", opt, k->help ? k->help : "", type_name(k->type),
                range, k->def ? "default " : "required", k->def ? k->def : "");
    }
}
