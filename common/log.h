/* log.h — one line per event, key=value, to stderr.
 *
 *   2026-11-29T08:40:01.123Z info  svc=infer event=bank_swap version=7 ms=41
 *
 * The level comes from log_set_level() or the MODA_LOG environment variable
 * (debug|info|warn|error). Thread-safe: each line is written with one fputs.
 * The service name set with log_set_name() is added as svc=NAME to every line.
 */
#ifndef MODA_LOG_H
#define MODA_LOG_H

enum { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3, LOG_OFF = 4 };

void log_set_level(int level);
int log_get_level(void);
/* Parse "debug|info|warn|error|off"; returns -1 when unknown. */
int log_parse_level(const char *s);
/* Borrowed: the string must outlive logging (a literal or argv element). */
void log_set_name(const char *svc);

/* fmt is the key=value tail, e.g. log_info("event=start port=%d", p). */
void log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_write(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_write(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_write(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)

#endif
