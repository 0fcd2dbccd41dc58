/* cfg.h — program configuration: a declared schema, an optional file, command-line overrides.
 *
 * Precedence: schema default < config file < command line. Every value is validated against
 * its key's type and range when it is set; errors are ERR_CONFIG with a message naming the key
 * and where it came from ("moda.conf:12: unknown key 'hwn'", "--hwm: bad value '-3' for 'hwm':
 * below minimum 1").
 *
 * File format: `key = value` lines; `#` starts a comment (at line start or after whitespace);
 * blank lines ignored; `[section]` prefixes the following keys with "section." so schemas may
 * declare dotted names; values may be "double quoted". A key set twice in one file is an error.
 *
 * Command line: `--config FILE` (read first, wherever it appears), `--key value`,
 * `--key=value`, `--set key=value`, bool keys also as `--key` / `--no-key`; `-` and `_` are
 * interchangeable in key names on the command line. `--help` / `--version` make cfg_parse
 * return CFG_HELP / CFG_VERSION. Other arguments are positional (if the program allows them).
 */
#ifndef MODA_CFG_H
#define MODA_CFG_H

#include <stdint.h>
#include <stdio.h>

#include "err.h"

typedef enum { CFG_INT = 1, CFG_DOUBLE, CFG_STRING, CFG_BOOL, CFG_ENDPOINT } cfg_type_t;

/* One schema row. `def` is the default as text (NULL = required: cfg_parse fails if unset).
 * For CFG_INT/CFG_DOUBLE, [min, max] is checked unless min == max == 0; for CFG_STRING and
 * CFG_ENDPOINT, max > 0 limits the length. The schema array ends with a row whose name is NULL
 * (CFG_END). Borrowed: the schema must outlive the cfg_t (use a static array). */
typedef struct cfg_key {
    const char *name;
    cfg_type_t type;
    const char *def;
    double min, max;
    const char *help;
} cfg_key_t;

#define CFG_END {NULL, 0, NULL, 0, 0, NULL}

typedef struct cfg cfg_t;

/* Positive results of cfg_parse. */
enum { CFG_HELP = 1, CFG_VERSION = 2 };

/* prog: program name for help text; usage: one line after the name ("[options] ENDPOINT");
 * summary: one paragraph. Borrowed. max_positional: how many positional arguments are
 * allowed (0 for services). Caller owns result (cfg_destroy). NULL + err when the schema
 * itself is invalid (duplicate name, default that does not validate). */
cfg_t *cfg_new(const char *prog, const char *usage, const char *summary, const cfg_key_t *schema,
               int max_positional, err_t *err);
void cfg_destroy(cfg_t **c);

/* Parse argv[1..argc-1] (and the --config file). Returns 0, CFG_HELP, CFG_VERSION, or
 * ERR_CONFIG with err naming the key and the file line or argument. */
int cfg_parse(cfg_t *c, int argc, char **argv, err_t *err);

/* Read a config file (cfg_parse does this for --config). ERR_CONFIG when missing/unreadable. */
int cfg_load_file(cfg_t *c, const char *path, err_t *err);
/* Set one key from text; `where` names the source for messages ("--hwm", "env"). */
int cfg_set(cfg_t *c, const char *key, const char *value, const char *where, err_t *err);

/* Typed getters. Asking for an undeclared key or the wrong type is a programmer error
 * (CHECK). Strings are borrowed, valid until cfg_destroy or the next cfg_set of that key. */
int64_t cfg_int(const cfg_t *c, const char *key);
double cfg_double(const cfg_t *c, const char *key);
const char *cfg_str(const cfg_t *c, const char *key); /* CFG_STRING and CFG_ENDPOINT */
int cfg_bool(const cfg_t *c, const char *key);
/* Where the current value came from: "default", "FILE:LINE", or the argument. Borrowed. */
const char *cfg_origin(const cfg_t *c, const char *key);

/* Positional arguments, in order. Borrowed (argv elements). */
int cfg_npositional(const cfg_t *c);
const char *cfg_positional(const cfg_t *c, int i);

/* Write the --help text (usage, summary, every key with type, default, range, help) to f. */
void cfg_write_help(const cfg_t *c, FILE *f);

#endif
